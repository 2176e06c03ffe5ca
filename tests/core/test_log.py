import io
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from orchestrator.log import REDACTED, configure_logging, redact, register_secret


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.fixture
def secret() -> str:
    value = f"s3cr3t-{uuid.uuid4()}"
    register_secret(value)
    return value


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_off_a_terminal_with_secret_keys_and_values_redacted(secret: str) -> None:
    out = io.StringIO()
    configure_logging("info", stream=out)
    structlog.get_logger("orchestrator.test").info(
        f"connecting as admin with {secret}",
        password="hunter2",
        node="web01",
        headers={"Authorization": "Basic YWRtaW46aHVudGVyMg==", "Accept": "*/*"},
        attempts=[{"api_token": "t0k"}, f"retry with {secret}!", 3],
        winrm={"credential": {"user": "admin", "pass": "x"}},
    )
    assert secret not in out.getvalue() and "hunter2" not in out.getvalue()
    (line,) = json_lines(out)
    assert line["event"] == f"connecting as admin with {REDACTED}"
    assert line["password"] == REDACTED
    assert line["headers"] == {"Authorization": REDACTED, "Accept": "*/*"}
    assert line["attempts"] == [{"api_token": REDACTED}, f"retry with {REDACTED}!", 3]
    assert line["winrm"] == {"credential": REDACTED}
    assert (line["level"], line["logger"], line["node"]) == ("info", "orchestrator.test", "web01")
    assert line["timestamp"].endswith("Z")


def test_console_rendering_on_a_terminal_is_redacted_too(secret: str) -> None:
    out = Terminal()
    configure_logging("debug", stream=out)
    structlog.get_logger().debug("session opened", token=secret, note=f"key={secret}")
    text = out.getvalue()
    assert "session opened" in text and REDACTED in text
    assert secret not in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_standard_library_loggers_go_through_the_same_redaction(secret: str) -> None:
    out = io.StringIO()
    configure_logging("info", stream=out)
    logging.getLogger("pypsrp.wsman").warning("auth failed for %s with %s", "admin", secret)
    (line,) = json_lines(out)
    assert line["event"] == f"auth failed for admin with {REDACTED}"
    assert line["logger"] == "pypsrp.wsman"


@pytest.mark.parametrize("json_output", [True, False])
def test_exception_text_and_frame_locals_do_not_leak(secret: str, json_output: bool) -> None:
    out = Terminal()
    configure_logging("info", stream=out, json=json_output)

    def connect(password: str) -> None:
        raise PermissionError(f"logon failure for {password}")

    try:
        connect(secret)
    except PermissionError:
        structlog.get_logger().exception("connect failed")
    text = out.getvalue()
    assert "PermissionError" in text and "logon failure for" in text
    assert secret not in text


def test_objects_are_scrubbed_through_their_repr(secret: str) -> None:
    class Settings:
        def __repr__(self) -> str:
            return f"Settings(user='admin', pw='{secret}')"

    out = io.StringIO()
    configure_logging("info", stream=out)
    structlog.get_logger().info("loaded", settings=Settings())
    (line,) = json_lines(out)
    assert line["settings"] == f"Settings(user='admin', pw='{REDACTED}')"


def test_level_filters_both_structlog_and_library_loggers() -> None:
    out = io.StringIO()
    configure_logging("warning", stream=out)
    structlog.get_logger().info("hidden")
    logging.getLogger("urllib3").info("hidden too")
    structlog.get_logger().warning("shown")
    assert [line["event"] for line in json_lines(out)] == ["shown"]
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("loud", stream=out)


def test_reconfiguring_replaces_the_handler_instead_of_duplicating_lines() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", stream=first)
    configure_logging("info", stream=second)
    structlog.get_logger().info("once")
    assert first.getvalue() == ""
    assert [line["event"] for line in json_lines(second)] == ["once"]


def test_longer_secrets_are_removed_whole_and_empty_ones_ignored() -> None:
    short = f"ab-{uuid.uuid4().hex[:6]}"
    register_secret(short)
    register_secret(short + "-and-more")
    register_secret("")
    assert redact(f"x {short}-and-more y") == f"x {REDACTED} y"
    assert redact("nothing here") == "nothing here"


def test_redact_by_value_only_keeps_service_names_that_look_like_secrets(secret: str) -> None:
    services = {"TokenBroker": "Running", "W3SVC": secret}
    assert redact(services, by_key=False) == {"TokenBroker": "Running", "W3SVC": REDACTED}
    assert redact(services) == {"TokenBroker": REDACTED, "W3SVC": REDACTED}
    assert redact(("a", 1, None, 2.5, True)) == ["a", 1, None, 2.5, True]
