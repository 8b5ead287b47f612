"""Command-line overrides for `config.Config` and the common start of every stage script.

`--section.field=value` (or `--section.field value`) sets one field; a field name that is
unique across the config may be given alone (`--source=demo` means `--data.source=demo`,
`--title "深夜emo"` means `--generate.title`). A bare `--flag` sets a bool field to true.
Unknown keys, values of the wrong type and values outside a field's allowed values (declared with the
field in config.py) exit with status 2 in one line. `--help` lists the script's own sections first.
"""

import dataclasses
import json
import logging
import math
import os
import sys
from pathlib import Path

from config import CROSS_CHECKS, DEVICES, Config

from .io import PipelineError, atomic_write
from .text import invalid_utf8, printable

log = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
COMMON = "paths and seed"


@dataclasses.dataclass
class Field:
    owner: object
    name: str
    type: type
    meta: dict


def _fields(cfg) -> dict[str, Field]:
    """Every settable dotted key -> its field."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            for g in dataclasses.fields(value):
                out[f"{f.name}.{g.name}"] = Field(value, g.name, type(getattr(value, g.name)), dict(g.metadata))
        else:
            out[f.name] = Field(cfg, f.name, type(value), dict(f.metadata))
    return out


def _resolve(key: str, fields: dict, sections: tuple = ()) -> str:
    """A dotted key, or a field name alone: the only field of that name, else the one in the first of the script's
    own sections that has it (`--seed_songs` is generate.seed_songs for generate_playlist.py, eval.seed_songs for
    evaluate_tiger.py)."""
    if key in fields:
        return key
    matches = [k for k in fields if k.rsplit(".", 1)[-1] == key]
    own = [k for section in sections for k in matches if k.split(".", 1)[0] == section][:1]
    if len(matches) == 1 or own:
        return (own or matches)[0]
    if matches:
        usage_error(f"--{key} is ambiguous: use one of {', '.join('--' + m for m in matches)}")
    import difflib

    names = sorted({*fields, *(k.rsplit(".", 1)[-1] for k in fields)})
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join('--' + c for c in close)}? " if close else ""
    usage_error(f"unknown option --{key}; {hint}`--help` lists the valid keys")


def _convert(key: str, raw: str, typ: type):
    try:
        if typ is bool:
            low = raw.strip().lower()
            if low in _TRUE | _FALSE:
                return low in _TRUE
            raise ValueError
        return typ(raw)
    except ValueError:
        usage_error(f"--{key}={raw!r}: expected a value of type {typ.__name__}")


def usage_error(msg: str):
    """A bad option: one line on stderr, exit status 2 (before any work)."""
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def allowed(meta: dict) -> str:
    """The allowed values of a field, as --help and the error messages show them."""
    if "choices" in meta:
        return " | ".join(meta["choices"])
    if "each" in meta:
        return "a comma-separated list of " + " | ".join(meta["each"])
    bounds = [f"{op} {meta[k]}" for k, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")) if k in meta]
    kinds = {"device": " | ".join(DEVICES) + "[:N]", "widths": "comma-separated positive integers",
             "counts": "comma-separated integers >= 0", "model": "scratch | a local folder"}
    return ", ".join(bounds) if bounds else kinds.get(meta.get("kind"), "")


def _problem(value, meta: dict) -> str | None:
    """Why `value` is not allowed by the field's rules (None when it is)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    for key, ok in (("gt", lambda b: value > b), ("ge", lambda b: value >= b), ("lt", lambda b: value < b),
                    ("le", lambda b: value <= b)):
        if key in meta and not ok(meta[key]):
            return f"must be {allowed(meta)}"
    if "choices" in meta and value not in meta["choices"]:
        return f"choose one of {allowed(meta)}"
    if "each" in meta:
        items = [v.strip() for v in value.split(",") if v.strip()]
        if not items or any(v not in meta["each"] for v in items):
            return f"give {allowed(meta)}"
    kind = meta.get("kind")
    if kind == "nonblank" and not value.strip():
        return "must not be empty"
    if kind == "folder" and not value.strip():
        return "is empty (it would mean the current folder); give a folder"
    if kind == "folder" and Path(value).exists() and not Path(value).is_dir():
        return "is a file; give a folder"
    if kind == "widths" and not all(p.strip().isdigit() and int(p) > 0 for p in value.split(",")):
        return f"give {allowed(meta)} such as '256,128'"
    if kind == "counts" and not all(p.strip().isdigit() for p in value.split(",")):
        return f"give {allowed(meta)} such as '0,1,5'"
    if kind == "device":
        if value.split(":")[0] not in DEVICES or (":" in value and not value.startswith("cuda:")):
            return f"choose one of {allowed(meta)}"
        if value.startswith("cuda"):  # only then pay for importing torch
            from .device import resolve_device

            try:
                resolve_device(value)
            except PipelineError as e:
                return str(e)
    if kind == "model" and value != "scratch":
        if not Path(value).is_dir():
            return "use scratch or a local folder with a pretrained T5 (nothing is downloaded)"
        try:
            model_type = json.loads((Path(value) / "config.json").read_text(encoding="utf-8")).get("model_type")
        except (OSError, ValueError, AttributeError):
            model_type = None
        if model_type not in ("t5", "mt5", "umt5"):
            return (f"is not a T5 model folder (its config.json says model_type {model_type!r}); give a folder with "
                    "a pretrained T5, or scratch")
    return None


def check_values(cfg: Config) -> None:
    """Every field within its declared allowed values, and the CROSS_CHECKS; else exit 2 naming the option."""
    for key, f in _fields(cfg).items():
        value = getattr(f.owner, f.name)
        problem = _problem(value, f.meta)
        if problem:
            usage_error(f"--{key}={value!r}: {problem}")
    for keys, holds, what in CROSS_CHECKS:
        if not holds(cfg):
            values = ", ".join(f"--{k}={_get(cfg, k)!r}" for k in keys)
            usage_error(f"{values}: need {what}")


def _get(cfg, key: str):
    section, _, name = key.rpartition(".")
    return getattr(getattr(cfg, section) if section else cfg, name)


def format_help(cfg: Config, description: str = "", sections: tuple = ()) -> str:
    """The description, then the options: paths and seed, the script's own sections, then every other section
    (accepted everywhere, used by the stages they name); per option its default, allowed values and meaning."""
    fields = _fields(cfg)
    groups: dict[str, list] = {COMMON: []}
    for key in fields:
        groups.setdefault(key.rpartition(".")[0] or COMMON, []).append(key)
    own = [COMMON, *sections]
    others = [g for g in groups if g not in own]
    lines = [description.strip(), ""] if description else []
    lines.append("Options (--key=value, or --field=value when the field name is unique); default, allowed values:")
    for group in own + others:
        if others and group == others[0]:
            lines += ["", "Options of the other stages (accepted here too):"]
        doc = getattr(cfg, group).__doc__ if group != COMMON else ""
        lines += ["", f"[{group}] {doc.splitlines()[0] if doc else ''}".rstrip()]
        for key in groups[group]:
            f = fields[key]
            rule = allowed(f.meta)
            lines.append(f"  --{key}={getattr(f.owner, f.name)!r}" + (f"  ({rule})" if rule else ""))
            lines.append(f"      {f.meta.get('help', '')}")
    return "\n".join(lines)


def parse_config(argv=None, description: str = "", sections: tuple = ()) -> Config:
    """Return a Config with the overrides in `argv` (default: sys.argv[1:]) applied and every value checked.
    `sections`: the config sections of the calling script, listed first by --help."""
    return parse_overrides(argv, description, sections)[0]


def parse_overrides(argv=None, description: str = "", sections: tuple = ()) -> tuple[Config, set[str]]:
    """parse_config, and the dotted keys the command line set (`--title ""` is set: the user asked for it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = Config()
    fields = _fields(cfg)
    given = set()
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg in ("-h", "--help"):
            print(format_help(cfg, description, sections))
            raise SystemExit(0)
        bad = invalid_utf8(arg)
        if bad:
            usage_error(f"{printable(arg.partition('=')[0])} ... is not valid UTF-8 ({bad}): give it in UTF-8")
        if not arg.startswith("--") or len(arg) == 2:
            usage_error(f"unexpected argument {printable(arg)!r}: options look like --key=value (see --help)")
        key, eq, raw = arg[2:].partition("=")
        key = _resolve(key, fields, sections)
        f = fields[key]
        if not eq:
            if f.type is bool and (i >= len(argv) or argv[i].lower() not in _TRUE | _FALSE):
                raw = "true"
            elif i < len(argv):
                raw, i = argv[i], i + 1
            else:
                usage_error(f"--{key} needs a value")
        setattr(f.owner, f.name, _convert(key, raw, f.type))
        given.add(key)
    check_values(cfg)
    return cfg, given


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
    """Run a stage's main(); a PipelineError (or an OSError such as a full disk or a denied folder) becomes one
    line on stderr and exit status 1."""
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
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        raise SystemExit(1) from None
