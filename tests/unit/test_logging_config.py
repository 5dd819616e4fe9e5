"""Where a process's log level comes from: an explicit setting, then the environment, then its default."""

from __future__ import annotations

import logging

import pytest

from scaler_jupyter.logging_config import LOG_LEVEL_ENV, level


def test_an_explicit_level_wins_over_the_environment_which_wins_over_the_default(monkeypatch):
    monkeypatch.delenv(LOG_LEVEL_ENV, raising=False)
    assert level(None, default="WARNING") == "WARNING"
    monkeypatch.setenv(LOG_LEVEL_ENV, "debug")
    assert level(None, default="WARNING") == "DEBUG"
    assert level("Error", default="WARNING") == "ERROR"
    assert level(logging.INFO, default="WARNING") == "INFO"


def test_a_name_that_is_no_level_is_refused_naming_where_it_came_from(monkeypatch):
    monkeypatch.setenv(LOG_LEVEL_ENV, "loud")
    with pytest.raises(ValueError, match=f"{LOG_LEVEL_ENV}='loud'.*DEBUG, INFO"):
        level(None, default="INFO")
    with pytest.raises(ValueError, match="log_level='chatty'"):
        level("chatty", default="INFO")
