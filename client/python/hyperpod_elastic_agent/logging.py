"""get_logger(): the reference package's logging helper, so that
`from hyperpod_elastic_agent.logging import get_logger` keeps working.
Loggers are plain stdlib loggers under the module's name; hyperpodrun
configures nothing, the application does."""
import logging as _logging


def get_logger(name=None):
    return _logging.getLogger(name)
