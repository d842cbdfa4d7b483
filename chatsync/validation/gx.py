"""Validation of the chat side with Great Expectations 1.x, the suite generated from the rules.

For each entity of ``chatsync.model.rules`` the chat table gets: key columns not null, the key unique
(compound for participants); each field with a domain in the mapping (``domains:``) its allowed
values, its range and its mask; and ``sql/consistency/residual_differences.sql`` (the detect query
over the whole tables, less the keys a repair holds back) must return no row: "no remaining
difference". The domains are checked on chat values that differ from their room row's: the chat
table's view holds NULL where the chat value equals the room value, which GX's column expectations
skip, so a value the room side holds itself never fails the chat side's validation (a room value
outside its domain is the repair's to report). GX reads both through views in the ops schema
(``gx_*``, replaced when the mapping or the rules change them), as table assets: GX executes a *query*
asset's whole query just to learn its columns, pulling every row into the task's memory
(measured: 1.9 GB at 10M participants), where a table asset is introspected from the catalog and
every expectation runs as aggregate SQL.

The file context lives in a writable folder (``context_dir``): ``settings.gx_dir`` when set,
otherwise one folder per database, ops schema and mapping under ``$AIRFLOW_HOME/chatsync_data/gx/``
(or ``~/.chatsync/gx/``), started from the template ``great_expectations/`` (the data docs'
styles and the context's configuration); two deployments on one host never share one. Its
suites, validation definitions and checkpoint are rewritten from the rules at each run, so they
always match the code. The Postgres datasource's connection string is the config variable
``${CHATSYNC_GX_CONNECTION_STRING}``, set in the environment at run time: no secret is written
to disk. Results and Data Docs go under ``gx/uncommitted/`` (ignored by git).
Great Expectations is imported inside ``validate()``: it costs seconds to import. Two modules it
imports only for an expectation the suite never uses (``UNUSED_GX_IMPORTS``) are deferred until
first used, which keeps them out of the validate task's memory.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import shutil
import sys
import time
import types
from dataclasses import asdict, dataclass, field
from importlib.resources import as_file, files
from pathlib import Path

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from chatsync.config import Settings, data_home
from chatsync.db.connection import connection, one
from chatsync.model.domains import EntityDomains, entity_domains

log = logging.getLogger("chatsync.validate")
J = sql.SQL


DATASOURCE = "chatsync_postgres"
CHECKPOINT = "chatsync_chat_side"
CONNECTION_VARIABLE = "CHATSYNC_GX_CONNECTION_STRING"
GX_TEMPLATE = files("chatsync.validation") / "great_expectations"  # package data: copied, never written
PARTIAL_UNEXPECTED = 5


@dataclass
class ValidationOutcome:
    passed: bool
    failed: list[dict] = field(default_factory=list)
    evaluated: int = 0
    seconds: float = 0.0
    docs_index: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def sqlalchemy_url(database_url: str) -> str:
    """A SQLAlchemy (psycopg 3) URL for a libpq URL or conninfo, socket directories included."""
    from sqlalchemy.engine import URL

    p = {k: str(v) for k, v in conninfo_to_dict(database_url).items() if v is not None}
    query = {k: v for k, v in p.items() if k not in ("host", "port", "user", "password", "dbname")}
    host = p.get("host")
    if host and host.startswith("/"):  # a Unix socket directory goes in the query string
        query["host"] = host
        host = None
    url = URL.create("postgresql+psycopg", username=p.get("user"), password=p.get("password"),
                     host=host, port=int(p["port"]) if p.get("port") else None,
                     database=p.get("dbname"), query=query)
    return url.render_as_string(hide_password=False)


def outside_mask_column(column: str) -> str:
    """The chat table view's column holding a value of ``column`` with a bit outside its mask."""
    return f"{column}_outside_mask"


def chat_table_view(ed: EntityDomains) -> sql.Composable:
    """The chat table as validation reads it: the key columns, and each field with a domain under
    its own name, holding only the values outside the domain that differ from their room row's
    (as text for a set of strings), NULL elsewhere; for a mask, a column of the values with a bit
    outside it, GX having no bitmask expectation. Without domains, the chat table's keys alone."""
    es = ed.es
    cols = [es.cc(k) for k in ed.entity.chat_key]
    for f, domain in ed.fields:
        column = es.chat.columns[f.chat]
        if domain.allowed is not None or domain.min is not None or domain.max is not None:
            value = ed.chat_value_outside(f, domain, ("allowed", "min", "max"))
            if domain.allowed is not None and any(isinstance(v, str) for v in domain.allowed):
                # compared as text, as the repair does: GX binds the set as varchar, which an enum has no operator for
                value = J("({})::text").format(value)
            cols.append(J("{} AS {}").format(value, sql.Identifier(column)))
        if domain.mask is not None:
            cols.append(J("{} AS {}").format(ed.chat_value_outside(f, domain, ("mask",)),
                                             sql.Identifier(outside_mask_column(column))))
    return J("SELECT {} FROM {} AS c").format(J(", ").join(cols), es.chat.ident)


def _expectations(gx, ed: EntityDomains) -> list:
    """The expectations of one chat table: its key's, and its fields' domains."""
    E = gx.expectations
    table = ed.es.chat
    cols = [table.columns[k] for k in ed.entity.chat_key]
    out = [E.ExpectColumnValuesToNotBeNull(column=c) for c in cols]
    if len(cols) > 1:
        out.append(E.ExpectCompoundColumnsToBeUnique(column_list=cols))
    else:
        out.append(E.ExpectColumnValuesToBeUnique(column=cols[0]))
    for f, domain in ed.fields:
        column = table.columns[f.chat]
        if domain.allowed is not None:
            out.append(E.ExpectColumnValuesToBeInSet(column=column, value_set=list(domain.allowed)))
        if domain.min is not None or domain.max is not None:
            out.append(E.ExpectColumnValuesToBeBetween(column=column, min_value=domain.min, max_value=domain.max))
        if domain.mask is not None:
            out.append(E.ExpectColumnValuesToBeNull(
                column=outside_mask_column(column),
                description=f"{column}: no bit set outside the mask {domain.mask:#x} ({domain.mask})"))
    return out


# GX imports these when it loads its core expectations, for one expectation (KL divergence) and
# its charts that the generated suite never uses: 76 MB of the validate task's 290 (measured).
UNUSED_GX_IMPORTS = ("altair", "scipy.stats")


class DeferredModule(types.ModuleType):
    """Stands in sys.modules for a module until an attribute of it is first used; then the real
    module is imported and every later use goes to it (so an expectation that needs it works)."""

    def __init__(self, name: str, spec) -> None:
        super().__init__(name)
        self.__spec__ = spec  # the import system reads it when the name is imported again

    def __getattr__(self, attr: str):  # only called for names not set on the stand-in
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        real = importlib.import_module(name)
        self.__dict__.update(real.__dict__)
        return getattr(real, attr)


def defer_unused_imports(names=UNUSED_GX_IMPORTS) -> list[str]:
    """Put a DeferredModule in sys.modules for each name not imported yet; the names deferred."""
    deferred = []
    for name in names:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is not None:
            sys.modules[name] = DeferredModule(name, spec)
            deferred.append(name)
    return deferred


def _context(settings: Settings):
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")  # no phoning home from a pipeline
    defer_unused_imports()  # a no-op once they (or GX, which imports them) are loaded
    # GX's API-docs registry logs ~150 INFO lines per import ("Skipping registering function"):
    # nothing a reader of the task log needs
    logging.getLogger("great_expectations._docs_decorators").setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    root = context_dir(settings)
    context = gx.get_context(mode="file", project_root_dir=str(root))
    bars = context.variables.progress_bars
    if bars is None or (bars.get("globally") if isinstance(bars, dict) else bars.globally):
        context.variables.progress_bars = ProgressBarsConfig(globally=False)  # task logs, not tty bars
        context.variables.save()
    return gx, context


def context_dir(settings: Settings) -> Path:
    """The GX file context's folder, created from the template when missing."""
    if settings.gx_dir:
        root = Path(settings.gx_dir)
    else:
        root = data_home() / "gx" / context_key(settings)
    if not (root / "gx" / "great_expectations.yml").exists():
        with as_file(GX_TEMPLATE) as template:
            shutil.copytree(template, root, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("uncommitted", "validation_results", "data_docs"))
    return root


def context_key(settings: Settings) -> str:
    """Which database, ops schema and mapping a context serves (no password in it): its folder's
    name, and its published Data Docs' (chatsync.ops.report_store)."""
    import psycopg

    where = psycopg.conninfo.conninfo_to_dict(settings.require_database())
    parts = [str(where.get(k, "")) for k in ("host", "port", "dbname")]
    digest = hashlib.sha256("\0".join([*parts, settings.ops_schema,
                                        str(Path(settings.mapping_path).resolve())]).encode()).hexdigest()[:12]
    return f"{where.get('dbname', 'db')}-{settings.ops_schema}-{digest}"


def _same_expectations(a, b) -> bool:
    def key(suite):
        return [(e["type"], e["kwargs"]) for e in suite.to_json_dict()["expectations"]]
    return key(a) == key(b)


def _asset(datasource, name: str, wanted: dict, add):
    """The named asset, re-created only when its definition changed (keeps the committed ids)."""
    if name in datasource.get_asset_names():
        asset = datasource.get_asset(name)
        if all(getattr(asset, k, None) == v for k, v in wanted.items()):
            return asset
        datasource.delete_asset(name)
    return add(name=name, **wanted)


def _views(settings: Settings) -> dict[str, str]:
    """The view GX reads for each asset (asset name -> view name in the ops schema): the chat
    table (chat_table_view), and the residual differences. A view is replaced only when its
    definition changed (its digest is its comment), so a run takes no lock a reader would wait on."""
    from chatsync.consistency.detect import residual_statement

    views = {}
    with connection(settings) as conn, conn.transaction():
        for ed in entity_domains(settings):
            entity = ed.entity
            for asset, body in ((f"{entity.name}_chat_table", chat_table_view(ed)),
                                (f"{entity.name}_residual_differences", residual_statement(settings, entity))):
                view = sql.Identifier(settings.ops_schema, f"gx_{asset}")
                digest = hashlib.md5(body.as_string(conn).encode()).hexdigest()
                current = one(conn.execute("SELECT obj_description(to_regclass(%s), 'pg_class')",
                                       (view.as_string(conn),)))[0]
                if current != digest:
                    conn.execute(J("DROP VIEW IF EXISTS {}").format(view))
                    conn.execute(J("CREATE VIEW {} AS {}").format(view, body))
                    conn.execute(J("COMMENT ON VIEW {} IS {}").format(view, sql.Literal(digest)))
                views[asset] = f"gx_{asset}"
    return views


def build(settings: Settings):
    """Bring datasource, assets, suites, validation definitions and checkpoint in line with the
    rules. Unchanged objects are kept as they are, so a run leaves the committed context alone."""
    views = _views(settings)
    gx, context = _context(settings)
    connection = "${" + CONNECTION_VARIABLE + "}"
    try:
        datasource = context.data_sources.get(DATASOURCE)
    except (KeyError, ValueError, LookupError):
        datasource = context.data_sources.add_postgres(name=DATASOURCE, connection_string=connection)
    definitions = []
    for ed in entity_domains(settings):
        entity = ed.entity
        # table assets on views whose plain names are chatsync's own: the mapped names, whatever
        # they hold, are quoted by psycopg in the view definitions, never by GX
        for asset_name, expectations in (
            (f"{entity.name}_chat_table", _expectations(gx, ed)),
            (f"{entity.name}_residual_differences", [gx.expectations.ExpectTableRowCountToEqual(value=0)]),
        ):
            wanted = {"table_name": views[asset_name], "schema_name": settings.ops_schema}
            asset = _asset(datasource, asset_name, wanted, datasource.add_table_asset)
            try:
                batch = asset.get_batch_definition("whole_table")
            except KeyError:
                batch = asset.add_batch_definition_whole_table("whole_table")
            suite = gx.ExpectationSuite(name=asset_name, expectations=expectations)
            try:
                stored = context.suites.get(asset_name)
                suite = stored if _same_expectations(stored, suite) else context.suites.add_or_update(suite)
            except gx.exceptions.DataContextError:
                suite = context.suites.add(suite)
            definition = None
            try:
                definition = context.validation_definitions.get(asset_name)
                if definition.data.id != batch.id or definition.suite.id != suite.id:
                    definition = None
            except (gx.exceptions.DataContextError, ValueError, KeyError):
                pass
            definitions.append(definition or context.validation_definitions.add_or_update(
                gx.ValidationDefinition(name=asset_name, data=batch, suite=suite)))
    checkpoint = context.checkpoints.add_or_update(gx.Checkpoint(
        name=CHECKPOINT, validation_definitions=definitions,
        actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")],
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": PARTIAL_UNEXPECTED}))
    return context, checkpoint


def validate(settings: Settings, run_id: int | None = None) -> ValidationOutcome:
    """Validate the chat side; never raises on a failed expectation (the caller decides)."""
    t0 = time.perf_counter()
    from chatsync.roomside import refresh as room_copy

    room_copy.sync(settings)  # "no remaining difference" reads the room side's copy: of now
    os.environ[CONNECTION_VARIABLE] = sqlalchemy_url(settings.require_database())
    context, checkpoint = build(settings)
    result = checkpoint.run(run_id=None, batch_parameters=None)
    outcome = ValidationOutcome(passed=bool(result.success))
    for run_result in result.run_results.values():
        asset = run_result.suite_name
        for r in run_result.results:
            outcome.evaluated += 1
            if r.success:
                continue
            cfg = r.expectation_config
            kwargs = cfg.kwargs
            details = {k: v for k, v in (r.result or {}).items()
                       if k in ("observed_value", "unexpected_count", "unexpected_percent",
                                "partial_unexpected_list", "element_count")}
            failure = {"expectation": cfg.type, "table": asset,
                       "column": kwargs.get("column") or ",".join(kwargs.get("column_list") or []) or None,
                       "details": details}
            outcome.failed.append(failure)
            log.error("run %s: validation failed: %s on %s column %s: %s", run_id, cfg.type, asset,
                      failure["column"], details)
    sites = context.get_docs_sites_urls()
    url = sites[0]["site_url"] if sites else None
    outcome.docs_index = url.removeprefix("file://") if url else None
    if outcome.docs_index:  # beside the reports, where the health page (maybe on another host) reads them
        from chatsync.ops import report_store

        report_store.publish_site(settings, Path(outcome.docs_index).parent, context_key(settings))
    outcome.seconds = round(time.perf_counter() - t0, 3)
    log.info("run %s: validation %s (%d expectations, %d failed) in %.2fs", run_id,
             "passed" if outcome.passed else "FAILED", outcome.evaluated, len(outcome.failed), outcome.seconds)
    return outcome
