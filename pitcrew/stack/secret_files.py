"""The secret files a deployment reads: generated once, mode 0600, in a 0700 folder, never overwritten.

``docker-compose.yml`` mounts each file as a Docker secret (``/run/secrets/<name>``) and every service
reads it from there (``*_FILE``, Airflow's ``*_CMD``, libpq's ``PGPASSFILE``), so no secret is written
into compose, an ``.env`` file, a command line or an image. ``pitcrew secrets`` is the documented step
that creates them; running it again only fills in what is missing, so rotating one secret is: delete
its file (and the files derived from it), run the command, restart the services that read it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from pitcrew.stack.topology import SECRET_NAMES

#: Secrets of services only compose runs (the local stack has no MinIO and no Grafana).
COMPOSE_ONLY_SECRET_NAMES = ("minio_root_password", "grafana_admin_password")
#: Every base secret compose declares: the shared ones first, then compose's own.
COMPOSE_SECRET_NAMES = (*SECRET_NAMES, *COMPOSE_ONLY_SECRET_NAMES)
#: The database user Airflow and MLflow log in as (``POSTGRES_USER`` in docker-compose.yml).
POSTGRES_USER = "airflow"
#: MinIO's root user; not a secret (``MINIO_ROOT_USER`` in docker-compose.yml), its password is.
MINIO_ROOT_USER = "pitcrew"


def _generate(name: str) -> str:
    if name == "airflow_fernet_key":
        # Airflow refuses anything but a url-safe base64 32-byte key here.
        from cryptography.fernet import Fernet

        return Fernet.generate_key().decode()
    # url-safe characters only: the values also go into URLs (redis://:<password>@...) and pgpass.
    return secrets.token_urlsafe(32)


def _pgpass(read: Callable[[str], str]) -> str:
    # libpq's password file (PGPASSFILE): host:port:database:user:password. MLflow's backend URI and
    # Airflow's sql_alchemy_conn / result_backend name the user only, libpq finds the password here.
    return f"*:*:*:{POSTGRES_USER}:{read('postgres_password')}\n"


def _aws_credentials(read: Callable[[str], str]) -> str:
    # boto3's shared credentials file (AWS_SHARED_CREDENTIALS_FILE): how MLflow reaches MinIO.
    return (
        "[default]\n"
        f"aws_access_key_id = {MINIO_ROOT_USER}\n"
        f"aws_secret_access_key = {read('minio_root_password')}\n"
    )


#: Files in the format a client reads directly, derived from a base secret (written after it).
DERIVED_FILES: dict[str, Callable[[Callable[[str], str]], str]] = {
    "pgpass": _pgpass,
    "aws_credentials": _aws_credentials,
}
#: Every file compose mounts as a secret.
ALL_SECRET_FILES = (*COMPOSE_SECRET_NAMES, *DERIVED_FILES)


def _write_new(path: Path, content: str) -> bool:
    """Create ``path`` with mode 0600 unless it exists; O_EXCL makes "never overwrite" race-free."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)  # the umask may have removed bits; never added any
        handle.write(content)
    return True


def check_secret_files(folder: Path) -> list[str]:
    """What stops compose from using ``folder``: one line per missing file or file others may read.

    ``docker-compose config`` does not look at secret files (it validates the compose file only); a
    missing one fails ``up`` much later, and libpq ignores a ``pgpass`` that group or others may read.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder} is not a folder (run: pitcrew secrets --dir {folder})"]
    problems = []
    for name in ALL_SECRET_FILES:
        path = folder / name
        if not path.is_file():
            problems.append(f"missing secret file {path}")
        elif path.stat().st_mode & 0o077:
            problems.append(f"{path} is readable by group or others (chmod 600 it)")
    return problems


def write_secret_files(folder: Path) -> list[Path]:
    """Create every missing secret file in ``folder`` (made 0700); return the paths written.

    Existing files are left as they are, so the command is safe to re-run. Values carry no trailing
    newline: Airflow's ``*_CMD`` options use the command's output verbatim.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)  # mkdir leaves an existing folder's mode alone, and the umask applies to mode

    def read(name: str) -> str:
        return (folder / name).read_text().strip()

    written = [folder / n for n in COMPOSE_SECRET_NAMES if _write_new(folder / n, _generate(n))]
    written += [folder / n for n, derive in DERIVED_FILES.items() if _write_new(folder / n, derive(read))]
    return written
