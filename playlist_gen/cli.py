"""Command-line overrides for `config.Config` and the common start of every stage script.

`--section.field=value` (or `--section.field value`) sets one field; a field name that is
unique across the config may be given alone (`--source=demo` means `--data.source=demo`,
`--title "深夜emo"` means `--generate.title`). A bare `--flag` sets a bool field to true.
Unknown keys and values of the wrong type exit with status 2 and name the valid keys.
"""

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

from config import Config

from .io import PipelineError, atomic_write

log = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _fields(cfg) -> dict:
    """Every settable dotted key -> (owner object, field name, type)."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            for g in dataclasses.fields(value):
                out[f"{f.name}.{g.name}"] = (value, g.name, type(getattr(value, g.name)))
        else:
            out[f.name] = (cfg, f.name, type(value))
    return out


def _resolve(key: str, fields: dict) -> str:
    if key in fields:
        return key
    matches = [k for k in fields if k.rsplit(".", 1)[-1] == key]
    if len(matches) == 1:
        return matches[0]
    if matches:
        _usage_error(f"--{key} is ambiguous: use one of {', '.join('--' + m for m in matches)}")
    _usage_error(f"unknown option --{key}; valid keys: {', '.join(sorted(fields))}")


def _convert(key: str, raw: str, typ: type):
    try:
        if typ is bool:
            low = raw.strip().lower()
            if low in _TRUE | _FALSE:
                return low in _TRUE
            raise ValueError
        return typ(raw)
    except ValueError:
        _usage_error(f"--{key}={raw!r}: expected a value of type {typ.__name__}")


def _usage_error(msg: str):
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def format_help(cfg: Config, description: str = "") -> str:
    lines = [description.strip(), "", "Options (--key=value; defaults shown):"] if description else []
    for key, (owner, name, typ) in _fields(cfg).items():
        lines.append(f"  --{key}={getattr(owner, name)!r}  ({typ.__name__})")
    return "\n".join(lines)


def parse_config(argv=None, description: str = "") -> Config:
    """Return a Config with the overrides in `argv` (default: sys.argv[1:]) applied."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = Config()
    fields = _fields(cfg)
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg in ("-h", "--help"):
            print(format_help(cfg, description))
            raise SystemExit(0)
        if not arg.startswith("--") or len(arg) == 2:
            _usage_error(f"unexpected argument {arg!r}: options look like --key=value (see --help)")
        key, eq, raw = arg[2:].partition("=")
        key = _resolve(key, fields)
        owner, name, typ = fields[key]
        if not eq:
            if typ is bool and (i >= len(argv) or argv[i].lower() not in _TRUE | _FALSE):
                raw = "true"
            elif i < len(argv):
                raw, i = argv[i], i + 1
            else:
                _usage_error(f"--{key} needs a value")
        setattr(owner, name, _convert(key, raw, typ))
    return cfg


def save_config(cfg: Config, stage: str, path: Path | None = None) -> Path:
    """Write the resolved config next to a stage's outputs (or at `path`)."""
    path = Path(path) if path else cfg.config_path(stage)
    with atomic_write(path) as f:
        json.dump({"stage": stage, **dataclasses.asdict(cfg)}, f, indent=2, ensure_ascii=False)
    return path


def setup_logging(level=logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", force=True)


def run_script(main) -> None:
    """Run a stage's main(); a PipelineError becomes one line on stderr and exit status 1."""
    setup_logging()
    try:
        main()
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except BrokenPipeError:  # output piped into `head` and closed early: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(141) from None
