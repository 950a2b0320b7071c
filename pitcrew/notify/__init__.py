"""Telling people that an approval waits: the message (:mod:`pitcrew.notify.messages`) and the reminder
bookkeeping (:mod:`pitcrew.notify.reminders`). Pure: no Airflow; the channels live in ``operators/notifiers.py``.
"""
