"""The value domains (the mapping's ``domains:`` section) as SQL: one builder for the repair, the
"no remaining difference" statement and the validation views alike.

A value is *outside* its domain when it is not NULL and breaks any part the domain gives: not one
of ``allowed`` (compared as text for strings, as numbers for a list of numbers), below ``min`` or
above ``max``, or a bit set outside ``mask``. NULL is never outside: a domain says which values a
field may hold, not whether it may be empty. The domain's values are composed in as literals
(``sql.Literal``), the columns as quoted identifiers.

A room row is *held back* when a field it would change on the chat side (the chat value differs,
or there is no chat row) takes a room value outside the field's domain: the repair leaves that
chat row alone and records the value (``room_domain_violations``) instead of copying it.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from chatsync.config import Settings
from chatsync.model.mapping import Domain, load_mapping
from chatsync.model.rules import Entity, Field
from chatsync.model.sqlgen import EntitySQL, entity_sql

J = sql.SQL


def _or(parts: list[sql.Composable]) -> sql.Composable:
    return J(" OR ").join(parts) if parts else J("FALSE")


def outside_domain(domain: Domain, value: sql.Composable, parts: tuple[str, ...] = ("allowed", "min", "max", "mask")
                   ) -> sql.Composable:
    """True when value (an SQL expression) is outside the domain, never NULL; ``parts`` restricts
    the check to some of the domain's parts (the validation checks a mask on its own)."""
    broken: list[sql.Composable] = []
    if domain.allowed is not None and "allowed" in parts:
        if all(isinstance(v, (int, float)) for v in domain.allowed):
            broken.append(J("({})::numeric NOT IN ({})").format(
                value, J(", ").join(sql.Literal(v) for v in domain.allowed)))
        else:  # text: any type compares, an enum label or not
            broken.append(J("({})::text NOT IN ({})").format(
                value, J(", ").join(sql.Literal(str(v)) for v in domain.allowed)))
    # the bounds are whole numbers: compared with the column's own number type, no cast per row
    if domain.min is not None and "min" in parts:
        broken.append(J("({}) < {}").format(value, sql.Literal(domain.min)))
    if domain.max is not None and "max" in parts:
        broken.append(J("({}) > {}").format(value, sql.Literal(domain.max)))
    if domain.mask is not None and "mask" in parts:
        broken.append(J("(({})::bigint & ({})) <> 0").format(value, sql.Literal(~domain.mask)))
    if not broken:
        return J("FALSE")
    return J("({} IS NOT NULL AND ({}))").format(value, _or(broken))


@dataclass(frozen=True)
class EntityDomains:
    """One entity's statements (EntitySQL) and those of its fields that have a domain."""

    es: EntitySQL
    fields: tuple[tuple[Field, Domain], ...]

    @property
    def entity(self) -> Entity:
        return self.es.entity

    def room_outside(self, f: Field, domain: Domain, r: str = "r", c: str | None = "c") -> sql.Composable:
        """Field f of room row r would write a value outside its domain to chat row c (c None: a
        chat row to be inserted)."""
        outside = outside_domain(domain, self.es.room_value(f, r))
        if c is None:
            return outside
        return J("({} AND {})").format(self.es.field_differs(f, r, c), outside)

    def held_back(self, r: str = "r", c: str | None = "c") -> sql.Composable:
        """True for a room row r the repair must not copy to chat row c (None: an insert); FALSE
        when no field has a domain. Never NULL, so NOT (...) keeps rows where it is false."""
        return _or([self.room_outside(f, d, r, c) for f, d in self.fields])

    def violations(self, r: str = "r", c: str = "c") -> sql.Composable:
        """VALUES rows (field, room value as text, outside) of a held-back row, one per field with
        a domain: what room_domain_violations records of the rows where outside is true."""
        rows = [J("({}, ({})::text, {})").format(sql.Literal(f.chat), self.es.room_value(f, r),
                                                 self.room_outside(f, d, r, c)) for f, d in self.fields]
        return J(", ").join(rows) if rows else J("(NULL::text, NULL::text, FALSE)")

    def chat_value_outside(self, f: Field, domain: Domain, parts: tuple[str, ...], c: str = "c") -> sql.Composable:
        """The chat value where it is outside these parts of the domain and differs from its room
        row's, NULL elsewhere (Great Expectations ignores NULLs: a chat value equal to the truth
        never fails validation, whatever the domain says). The room row is looked up only for a
        value outside the domain (nested CASE: evaluated in that order), so validating a table
        whose values are in their domains reads the chat table alone."""
        es = self.es
        equal = J("EXISTS (SELECT 1 FROM {} AS r WHERE {} AND NOT ({}))").format(
            es.room.ident, es.join_room_chat("r", c), es.field_differs(f, "r", c))
        return J("CASE WHEN {} THEN CASE WHEN NOT {} THEN {} END END").format(
            outside_domain(domain, es.cc(f.chat, c), parts), equal, es.cc(f.chat, c))


def for_entity(es: EntitySQL, domains: dict[str, Domain]) -> EntityDomains:
    return EntityDomains(es, tuple((f, domains[f.chat]) for f in es.entity.fields if f.chat in domains))


def entity_domains(settings: Settings) -> list[EntityDomains]:
    """entity_sql(settings) with each entity's domains (none when the mapping has no domains:)."""
    domains = load_mapping(settings.mapping_path).domains
    return [for_entity(es, domains) for es in entity_sql(settings)]
