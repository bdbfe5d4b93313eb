"""Notification text from Jinja2 templates (`rules/templates/`), Thai and English, times in Asia/Bangkok.

Thai text shows the Buddhist-era year (2026 -> 2569). Every open, unacknowledged alert carries an acknowledge
link: with an `AckLinkSigner` (always, in `build_rules_service`) the signed one-click link for the message's
receiver, `{public_url}/api/v1/alerts/{id}/ack-link?r=&exp=&sig=` (rules/acklink.py); without one, the API's
`{public_url}/api/v1/alerts/{id}/ack`, which needs an operator's bearer token.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from jinja2 import FileSystemLoader, StrictUndefined, Template, Undefined, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from core.model import DeviceInfo
from rules.evidence import CityNames, city_name
from rules.labels import FEED_EN, FEED_TH, KIND_EN, KIND_TH, SEVERITY_EN, SEVERITY_TH, STATE_TH, TEMPLATES_DIR
from rules.notify import text
from rules.store import Alert
from rules.timeutil import format_en, format_th

SUMMARY_CACHE_SIZE = 1024
RENDERED_CACHE_SIZE = 4096  # rendered texts kept per summary template (a storm repeats the same few values)


class AckLinks(Protocol):
    """What the renderer needs of an acknowledgement-link signer (`rules.acklink.AckLinkSigner`): named here,
    so that this module and rules/acklink.py do not import each other."""

    def url(self, public_url: str, alert_id: str, receiver: str, now_ns: int) -> str: ...



SUBJECT_MAX = 140  # characters of a subject line (mail clients and LINE previews cut longer ones)


def _environment(loader: FileSystemLoader, language: str) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        loader=loader,
        undefined=StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters.update(th_time=format_th, en_time=format_en, **text.filters(language))
    env.globals.update(
        SEVERITY_TH=SEVERITY_TH, STATE_TH=STATE_TH, KIND_TH=KIND_TH, KIND_EN=KIND_EN, FEED_TH=FEED_TH, FEED_EN=FEED_EN
    )
    return env


def _shorten(line: str, limit: int = SUBJECT_MAX) -> str:
    line = " ".join(line.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


class Renderer:
    def __init__(
        self,
        public_url: str = "http://localhost:8000",
        templates_dir: Path | None = None,
        *,
        ack_links: AckLinks | None = None,
        city_names: CityNames | None = None,
        device_lookup: Callable[[str], DeviceInfo | None] | None = None,
    ) -> None:
        self.public_url = public_url.rstrip("/")
        self.ack_links = ack_links
        # City slug -> (Thai, English) display names (the registry's); the engine fills `device_lookup` when unset.
        self.city_names = city_names
        self.device_lookup = device_lookup
        loader = FileSystemLoader(str(templates_dir or TEMPLATES_DIR))
        # One environment per language: the same filter names (`duration`, `qty`, …) read Thai or English.
        self.envs = {language: _environment(loader, language) for language in text.LANGUAGES}
        self.env = self.envs["en"]
        self._summary_envs = {lang: env.overlay(undefined=_Lenient) for lang, env in self.envs.items()}
        # Summaries are compiled once per (language, source text): compiling costs ~2 ms, rendering ~20 µs (storms).
        self._summaries: dict[tuple[str, str], _Summary] = {}
        self._summary_globals = {lang: dict(env.globals) for lang, env in self._summary_envs.items()}

    def api_ack_url(self, alert_id: str) -> str:
        """The API's acknowledge endpoint (needs an operator's bearer token)."""
        return f"{self.public_url}/api/v1/alerts/{alert_id}/ack"

    def ack_url(self, alert_id: str, receiver: str | None = None, now_ns: int = 0) -> str:
        """The link a message to `receiver` carries: signed (valid `ttl_s` from `now_ns`) when there is a signer."""
        if self.ack_links is not None and receiver:
            return self.ack_links.url(self.public_url, alert_id, receiver, now_ns)
        return self.api_ack_url(alert_id)

    def context(
        self, alerts: list[Alert], kind: str, receiver: str, now_ns: int, total: int | None = None
    ) -> dict[str, Any]:
        base_kind = kind.split("-", 1)[0]
        severity = max((a.severity for a in alerts), key=lambda s: {"info": 0, "warning": 1, "critical": 2}.get(s, 0))
        items = []
        for a in alerts:
            d = a.to_dict()
            d["ack_url"] = self.ack_url(a.id, receiver, now_ns)
            d["severity_th"] = SEVERITY_TH.get(a.severity, a.severity)
            d["state_th"] = STATE_TH.get(a.state, a.state)
            device = self.device_lookup(a.device_id) if self.device_lookup is not None else None
            d["device_name"] = (device.name if device is not None else "") or a.device_id
            d["city_th"] = city_name(a.city, self.city_names, "th")
            d["city_en"] = city_name(a.city, self.city_names, "en")
            items.append(d)
        return {
            "alerts": items,
            "kind": base_kind,
            "receiver": receiver,
            "severity": severity,
            "severity_th": SEVERITY_TH.get(severity, severity),
            "severity_en": SEVERITY_EN.get(severity, severity),
            "now_ns": now_ns,
            "public_url": self.public_url,
            # a storm message lists only the worst `alerts`; these count all of them
            "alert_count": max(total or 0, len(items)),
            "more_count": max(0, (total or 0) - len(items)),
        }

    def render(
        self, alerts: list[Alert], kind: str, receiver: str, language: str, now_ns: int, total: int | None = None
    ) -> tuple[str, str]:
        """(title, body) in `th`, `en` or `both` (Thai first); the title is in the receiver's language only.
        `total`: how many alerts the message is about when `alerts` lists only the worst of them (a storm)."""
        ctx = self.context(alerts, kind, receiver, now_ns, total)
        ctx["language"] = language
        title = _shorten(self.envs["th" if language == "th" else "en"].get_template("title.j2").render(ctx))
        parts = []
        if language in ("th", "both"):
            parts.append(self.envs["th"].get_template("message.th.j2").render(ctx).strip())
        if language in ("en", "both"):
            parts.append(self.envs["en"].get_template("message.en.j2").render(ctx).strip())
        return title, "\n\n———\n\n".join(parts) + "\n"

    def render_summary(self, template: str, context: dict[str, Any], language: str = "en") -> str:
        """A rule's one-line summary in `language` (sandboxed; a name the context lacks renders as "-")."""
        ctx = dict(context)
        device = ctx.get("device")
        if isinstance(device, dict) and device.get("city"):
            ctx["device"] = dict(device, city_name=city_name(str(device["city"]), self.city_names, language))
        summary = self._summaries.get((language, template))
        if summary is None:
            if len(self._summaries) >= SUMMARY_CACHE_SIZE:  # bounded: rules are few, but reloads add texts
                self._summaries.clear()
            env = self._summary_envs[language]
            summary = self._summaries[(language, template)] = _Summary(env, template)
        key = summary.key(ctx)
        if key is not None:
            text_out = summary.rendered.get(key)
            if text_out is not None:
                return text_out
        compiled = summary.template
        # The render loop of `Template.render` without its per-call merge of the globals ChainMap (3× faster):
        # the globals are a plain dict copied with the context into a fresh dict per call.
        fresh = compiled.new_context({**self._summary_globals[language], **ctx}, shared=True)
        text_out = " ".join("".join(compiled.root_render_func(fresh)).split())
        if key is not None:
            if len(summary.rendered) >= RENDERED_CACHE_SIZE:
                summary.rendered.clear()
            summary.rendered[key] = text_out
        return text_out

    def render_summaries(self, summary_th: str, summary_en: str, context: dict[str, Any]) -> tuple[str, str]:
        """(Thai, English) summaries of one alert from the same evidence (rules/evidence.py)."""
        return self.render_summary(summary_th, context, "th"), self.render_summary(summary_en, context, "en")


_Path = tuple[str | int, ...]


class _Summary:
    """A compiled summary and the texts it rendered, by the values it reads.

    Rendering is a pure function of what the template reads from its context: the names it uses, or the
    constant attribute / item chains it reads from them (`device.name`, `fields.level_m`). Those values
    (with their types: 1, 1.0 and True render differently) are the key of the texts already rendered; a
    flapping storm re-renders the same few texts for every state change. A template that reads something
    not hashable renders every time."""

    def __init__(self, env: SandboxedEnvironment, source: str) -> None:
        self.env = env
        self.template: Template = env.from_string(source)
        self.paths: tuple[_Path, ...] = _read_paths(env.parse(source))
        self.rendered: dict[tuple[Any, ...], str] = {}

    def key(self, ctx: dict[str, Any]) -> tuple[Any, ...] | None:
        out: list[Any] = []
        for path in self.paths:
            value: Any = ctx.get(str(path[0]), _MISSING)
            for step in path[1:]:
                if value is _MISSING:
                    break
                if type(value) is dict and step in value and step not in _DICT_ATTRIBUTES:
                    # what the sandbox's getattr / getitem find for a plain dict's key, without their lookups
                    # (an attribute of dict itself, e.g. `items`, wins in Jinja: that goes the long way)
                    value = value[step]
                    continue
                value = self.env.getattr(value, step) if isinstance(step, str) else self.env.getitem(value, step)
                if isinstance(value, Undefined):
                    value = _MISSING
            if callable(value):
                return None  # a method the template calls: its result is not known from here
            if isinstance(value, float):
                out.append(repr(value))  # 0.0 and -0.0 are equal but render differently
            else:
                out.append((type(value), value))
        key = tuple(out)
        try:
            hash(key)
        except TypeError:
            return None
        return key


_MISSING = object()
_DICT_ATTRIBUTES = frozenset(dir(dict))  # `device.items` is the method in Jinja, not the key "items"


def _read_paths(ast: nodes.Template) -> tuple[_Path, ...]:
    """The context values a template reads: ("device", "name") for `device.name`, ("value",) for `value`.
    A name the template assigns itself (`set`, loops, macros) is not the context's: then the whole template
    is keyed by every name it reads (the local shadows nothing it does not read)."""
    paths: set[_Path] = set()
    context_names = meta.find_undeclared_variables(ast)

    def chain(node: nodes.Node) -> _Path | None:
        steps: list[str | int] = []
        while True:
            if isinstance(node, nodes.Getattr):
                steps.append(node.attr)
                node = node.node
            elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) \
                    and isinstance(node.arg.value, (str, int)):
                steps.append(node.arg.value)
                node = node.node
            else:
                break
        if isinstance(node, nodes.Name) and node.name in context_names:
            return (node.name, *reversed(steps))
        return None

    def visit(node: nodes.Node) -> None:
        if isinstance(node, (nodes.Getattr, nodes.Getitem, nodes.Name)):
            path = chain(node)
            if path is not None:
                paths.add(path)
                return
        for child in node.iter_child_nodes():
            visit(child)

    visit(ast)
    return tuple(sorted(paths, key=repr))


class _Lenient(Undefined):
    """A name missing at run time (a field the reading lacks) shows as "-", never as an empty gap."""

    def __str__(self) -> str:
        return "-"
