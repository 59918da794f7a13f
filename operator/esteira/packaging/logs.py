"""TorchServe's logging as a production server wants it: Esteira's own log4j2 configuration.

TorchServe's built-in configuration logs every request three times (an access-log line, the frontend's debug
chatter per job and each metric line a worker prints), about 3 KB per request: tens of MB per 10,000 requests
on the pod's disk, never rotated before 100 MB. Requests are counted by the Prometheus metrics and the
inference log instead, so this configuration turns the access log off, keeps the frontend and the workers at
INFO without their per-request lines, sends only warnings and errors to the console (what ``kubectl logs``
and ``esteira up``'s server log show) and rolls each file at a size limit, keeping a few compressed ones.

``esteira package`` writes it to ``config/log4j2.xml``, where it can be edited; the entrypoint and
``esteira up`` start TorchServe with ``--log-config`` naming that file, or this default when a model folder
has none. Files go to ``$LOG_LOCATION`` and ``$METRICS_LOCATION``, as in TorchServe's own configuration.
"""

from __future__ import annotations

import re

LOG_CONFIG_PATH = "config/log4j2.xml"
ROLL_AT_MB = 10  # each log file rolls over at this size ...
KEEP_FILES = 3  # ... and this many compressed older files are kept, so one log never takes over 40 MB

# Per-request INFO lines of TorchServe 0.12's frontend and worker, dropped wherever they would be written. The
# metric lines a worker prints are parsed into Prometheus metrics (metrics_mode=prometheus) before this.
PER_REQUEST_LINES = (
    "Backend received inference at",
    "Backend response time",
    "Looping backend response",
    "Sending response for jobId",
    "result=[METRICS]",
)

_APPENDER = """\
    <RollingFile name="{name}" fileName="${{env:{where}:-logs}}/{name}.log"
                 filePattern="${{env:{where}:-logs}}/{name}.%i.log.gz">
      <PatternLayout pattern="{pattern}"/>
      <Policies><SizeBasedTriggeringPolicy size="{size} MB"/></Policies>
      <DefaultRolloverStrategy max="{keep}"/>
    </RollingFile>
"""

_LOGGERS = """\
  <Loggers>
    <Logger name="ACCESS_LOG" level="off" additivity="false"/>
    <Logger name="io.netty" level="error"/>
    <Logger name="org.apache" level="off"/>
    <Logger name="org.pytorch.serve" level="info" additivity="false">
{deny}
      <AppenderRef ref="ts_log"/>
      <AppenderRef ref="STDOUT" level="warn"/>
    </Logger>
    <Logger name="org.pytorch.serve.job" level="warn"/>
    <Logger name="MODEL_LOG" level="info" additivity="false">
{deny}
      <AppenderRef ref="model_log"/>
      <AppenderRef ref="STDOUT" level="warn"/>
    </Logger>
    <Logger name="MODEL_METRICS" level="info" additivity="false"><AppenderRef ref="model_metrics"/></Logger>
    <Logger name="TS_METRICS" level="info" additivity="false"><AppenderRef ref="ts_metrics"/></Logger>
    <Root level="warn">
      <AppenderRef ref="STDOUT"/>
      <AppenderRef ref="ts_log"/>
    </Root>
  </Loggers>
"""

_LINE = "%d{ISO8601} [%-5p] %t %c - %m%n"
_BARE = "%d{ISO8601} - %m%n"


def _deny_per_request_lines() -> str:
    alternatives = "|".join(re.escape(line) for line in PER_REQUEST_LINES)
    return f'      <RegexFilter regex="(?s).*({alternatives}).*" onMatch="DENY" onMismatch="NEUTRAL"/>'


def log4j2_xml(roll_at_mb: int = ROLL_AT_MB, keep_files: int = KEEP_FILES) -> str:
    """The whole log4j2 configuration; files roll at `roll_at_mb` and `keep_files` old ones are kept."""
    if roll_at_mb < 1 or keep_files < 1:
        raise ValueError("log files need at least 1 MB before rolling and at least 1 kept file")
    files = [
        ("ts_log", "LOG_LOCATION", _LINE),
        ("model_log", "LOG_LOCATION", _LINE),
        ("model_metrics", "METRICS_LOCATION", _BARE),
        ("ts_metrics", "METRICS_LOCATION", _BARE),
    ]
    appenders = "".join(
        _APPENDER.format(name=name, where=where, pattern=pattern, size=roll_at_mb, keep=keep_files)
        for name, where, pattern in files
    )
    console = f'    <Console name="STDOUT" target="SYSTEM_OUT"><PatternLayout pattern="{_LINE}"/></Console>\n'
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<!-- Esteira's TorchServe logging: no access log, no per-request lines, rolled at a size limit. -->\n"
        '<Configuration status="warn">\n'
        + "  <Appenders>\n"
        + console
        + appenders
        + "  </Appenders>\n"
        + _LOGGERS.format(deny=_deny_per_request_lines())
        + "</Configuration>\n"
    )
