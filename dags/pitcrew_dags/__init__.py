"""What pitcrew's DAG files share: the models they are generated for, DAG defaults, params, the release chain.

This package lives in the DAGs folder (which Airflow puts on ``sys.path``) and holds wiring only: which
operator follows which, with which arguments. The work is in ``operators/`` and the pure packages beneath
it. ``.airflowignore`` keeps the DAG processor from parsing this folder as DAG files.
"""
