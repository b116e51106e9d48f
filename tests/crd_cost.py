"""The cost kube-apiserver estimates for a CRD's CEL rules (``x-kubernetes-validations``), and its verdict.

An API server refuses a CustomResourceDefinition whose rules it estimates too costly: one rule over
``StaticEstimatedCostLimit`` ("estimated rule cost exceeds budget by factor of N"), or all of them together
over ``StaticEstimatedCRDCostLimit`` ("contributed to estimated rule cost total exceeding cost limit for entire
OpenAPIv3 schema"). There is no API server here, so this module estimates as it does, for the part of CEL
our rules use (anything else raises :class:`Unsupported`, never a guess):

- the schema's sizes (k8s.io/apiextensions-apiserver v0.25-v0.28, ``SchemaDeclType``): a string's size is its
  ``maxLength`` times 4 (bytes), else the request's 3 MiB (enums do not bound it before 1.29); a list's
  ``maxItems``, a map's ``maxProperties``, else as many of the smallest element as fit in 3 MiB;
  ``metadata.name`` at the root is a string of no ``maxLength``;
- each rule's cost (cel-go ``checker/cost.go``, with the macros ``all``/``exists``/``exists_one`` expanded into
  comprehensions as its parser does): selects and identifiers 1, constants 0, a list literal 10 plus its
  elements, ``&&``/``||`` both sides, ``?:`` the condition and the dearer branch, ``==``/``!=`` and string
  comparisons a tenth of the smaller side's size, ``in`` a list the list's size, ``startsWith`` a tenth of the
  prefix, ``matches`` (a tenth of the string's size + 1) times (a quarter of the pattern's size), string ``+``
  a tenth of the result, anything else 1; a comprehension its range's size times (step + condition);
- the rule's cardinality (``pkg/apis/apiextensions/validation``): the product of ``maxItems``/``maxProperties``
  of the lists and maps above the rule, or when one of them has none, as many of the rule's node as fit in 3 MiB.

The estimator changed between releases, so :data:`RELEASES` names each behaviour by the Kubernetes versions
that have it (the chart claims kubeVersion >=1.25): on 1.25.0 (cel-go v0.12.4) an int or bool whose size the
schema does not give (``has(x)``, ``size(x)``) counts as 2^64 - 1 in ``==`` (cel-go v0.12.5 and v0.12.6, in
1.25.1 to 1.27, count it as 1); on 1.28 (cel-go v0.16.0) ``has(x)`` costs 1 plus its operand (nothing before;
1.29 dropped the 1 again). :func:`judge` answers for each of these; 1.29 and later (enum sizes, other cel-go changes) are not
modelled.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from celpy import celparser
from lark import Token, Tree

#: kube-apiserver's limits (k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation, 1.25 to today).
RULE_LIMIT = 10_000_000  # StaticEstimatedCostLimit
CRD_LIMIT = 100_000_000  # StaticEstimatedCRDCostLimit
MAX_REQUEST = 3 * 1024 * 1024
U64 = 2**64 - 1
ACCUMULATOR = "__result__"


@dataclass(frozen=True)
class Release:
    """One behaviour of the estimator, by the Kubernetes versions (and cel-go) that have it."""

    name: str
    scalar_sizes: bool  # an int/bool/double of unknown size counts as size 1 (cel-go v0.12.5+)
    has_cost: int  # what has() adds to its operand's cost (-1: has() and its operand cost nothing)


RELEASES = (
    Release("1.25.0 (cel-go v0.12.4)", scalar_sizes=False, has_cost=-1),
    Release("1.25.1-1.27 (cel-go v0.12.5, v0.12.6)", scalar_sizes=True, has_cost=-1),
    Release("1.28 (cel-go v0.16.0)", scalar_sizes=True, has_cost=1),
)


class Unsupported(ValueError):
    """A rule or schema this estimator does not model (so it cannot say what the API server would)."""


# ---- the schema as CEL sees it (SchemaDeclType) ---------------------------------------------------------------
@dataclass
class Decl:
    kind: str  # object, list, map, string, bytes, int, uint, double, bool, null, dyn, timestamp, duration
    max_elements: int = 0
    min_size: int = 0
    fields: dict[str, Decl] = field(default_factory=dict)
    elem: Decl | None = None
    key: Decl | None = None


SCALAR_KINDS = {"int", "uint", "double", "bool", "timestamp", "duration"}
_STRING = Decl("string", 0, 2)
_BOOL, _INT, _DOUBLE = Decl("bool", 0, 4), Decl("int", 0, 1), Decl("double", 0, 1)


def _string_size(schema: dict[str, Any]) -> int:
    fmt = schema.get("format")
    if fmt in ("duration", "date-time"):
        return 32
    if fmt == "date":
        return 12
    return MAX_REQUEST - 2


def decl_of(schema: dict[str, Any], resource_root: bool = False) -> Decl | None:
    """The CEL declaration of a structural schema node (None: not visible to rules)."""
    if schema.get("x-kubernetes-int-or-string"):
        return Decl("dyn", MAX_REQUEST - 2, 1)
    if resource_root:
        props = dict(schema.get("properties") or {})
        meta = props.get("metadata") or {}
        mprops = meta.get("properties") or {}
        if not (props.get("kind", {}).get("type") == "string" and props.get("apiVersion", {}).get("type") == "string"
                and mprops.get("name", {}).get("type") == "string"
                and mprops.get("generateName", {}).get("type") == "string"):
            props.update(kind={"type": "string"}, apiVersion={"type": "string"}, metadata={
                "type": "object", "properties": {"name": {"type": "string"}, "generateName": {"type": "string"}}})
        schema = {**schema, "properties": props}
    kind = schema.get("type")
    if kind == "array":
        if "items" not in schema:
            return None
        items = decl_of(schema["items"], bool(schema["items"].get("x-kubernetes-embedded-resource")))
        if items is None:
            return None
        size = schema["maxItems"] if "maxItems" in schema else (MAX_REQUEST - 2) // (items.min_size + 1)
        return Decl("list", max(size, 0), 2, elem=items)
    if kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            values = decl_of(extra, bool(extra.get("x-kubernetes-embedded-resource")))
            if values is None:
                return None
            size = (schema["maxProperties"] if "maxProperties" in schema
                    else (MAX_REQUEST - 2) // (values.min_size + 6))
            return Decl("map", max(size, 0), 2, elem=values, key=_STRING)
        required = set(schema.get("required") or [])
        obj = Decl("object", 0, 2)
        for name, prop in (schema.get("properties") or {}).items():
            sub = decl_of(prop, bool(prop.get("x-kubernetes-embedded-resource")))
            if sub is None:
                continue
            if name.isidentifier():  # CEL escapes other names (__dash__, ...); our rules name none of those
                obj.fields[name] = sub
            if name in required and "default" not in prop:
                obj.min_size += len(name) + sub.min_size + 4
        return obj
    if kind == "string":
        fmt = schema.get("format")
        if fmt == "byte":
            return Decl("bytes", max(schema["maxLength"], 0) if "maxLength" in schema else _string_size(schema), 2)
        if fmt in ("duration", "date", "date-time"):
            return Decl("duration" if fmt == "duration" else "timestamp", _string_size(schema),
                        {"duration": 3, "date": 12, "date-time": 21}[fmt])
        return Decl("string", max(schema["maxLength"], 0) * 4 if "maxLength" in schema else _string_size(schema), 2)
    return {"boolean": _BOOL, "number": _DOUBLE, "integer": _INT}.get(kind or "")


# ---- CEL expressions, as cel-go's parser builds them (macros expanded) -------------------------------------------
@dataclass(eq=False)
class Expr:
    op: str  # const, ident, select, call, list, map, comprehension
    value: Any = None  # const: its Python value; ident: name; select: field; call: function
    kind: str = ""  # const: string, bytes, int, uint, double, bool, null
    args: list[Expr] = field(default_factory=list)
    target: Expr | None = None  # select: operand; call: receiver
    test_only: bool = False
    # comprehension
    iter_var: str = ""
    iter_range: Expr | None = None
    accu_init: Expr | None = None
    loop_cond: Expr | None = None
    loop_step: Expr | None = None
    result: Expr | None = None


def _const(value: Any, kind: str) -> Expr:
    return Expr("const", value, kind)


def _call(function: str, *args: Expr, target: Expr | None = None) -> Expr:
    return Expr("call", function, args=list(args), target=target)


def _accu() -> Expr:
    return Expr("ident", ACCUMULATOR)


_BINARY = {"relation_lt": "_<_", "relation_le": "_<=_", "relation_gt": "_>_", "relation_ge": "_>=_",
           "relation_eq": "_==_", "relation_ne": "_!=_", "relation_in": "@in", "addition_add": "_+_",
           "addition_sub": "_-_", "multiplication_mul": "_*_", "multiplication_div": "_/_",
           "multiplication_mod": "_%_"}


def _string_value(text: str) -> str:
    raw = text[:1] in "rR"
    body = text[1:] if raw else text
    quote = 3 if body[:3] in ('"""', "'''") else 1
    body = body[quote:-quote]
    return body if raw else body.encode("latin-1", "backslashreplace").decode("unicode_escape")


def _literal(token: Token) -> Expr:
    text = str(token)
    if token.type in ("STRING_LIT", "MLSTRING_LIT"):
        return _const(_string_value(text), "string")
    if token.type == "BYTES_LIT":
        return _const(_string_value(text[1:]).encode(), "bytes")
    if token.type == "INT_LIT":
        return _const(int(text, 0), "int")
    if token.type == "UINT_LIT":
        return _const(int(text[:-1], 0), "uint")
    if token.type == "FLOAT_LIT":
        return _const(float(text), "double")
    if token.type == "BOOL_LIT":
        return _const(text == "true", "bool")
    return _const(None, "null")


def _macro(name: str, target: Expr, args: list[Expr]) -> Expr:
    if len(args) != 2 or args[0].op != "ident":
        raise Unsupported(f"{name}() takes a variable and a predicate")
    var, predicate = args[0].value, args[1]
    if name == "all":
        init, cond = _const(True, "bool"), _call("@not_strictly_false", _accu())
        step, result = _call("_&&_", _accu(), predicate), _accu()
    elif name == "exists":
        init, cond = _const(False, "bool"), _call("@not_strictly_false", _call("!_", _accu()))
        step, result = _call("_||_", _accu(), predicate), _accu()
    else:  # exists_one
        init, cond = _const(0, "int"), _const(True, "bool")
        step = _call("_?_:_", predicate, _call("_+_", _accu(), _const(1, "int")), _accu())
        result = _call("_==_", _accu(), _const(1, "int"))
    return Expr("comprehension", iter_var=var, iter_range=target, accu_init=init, loop_cond=cond,
                loop_step=step, result=result)


def _build(node: Tree | Token) -> Expr:
    if isinstance(node, Token):
        raise Unsupported(f"unexpected token {node!r}")
    kids = node.children
    rule = node.data
    if rule == "expr":
        if len(kids) == 3 and kids[1] is not None:
            return _call("_?_:_", *(_build(k) for k in kids))
        return _build(kids[0])
    if rule in ("conditionalor", "conditionaland"):
        if len(kids) == 2 and kids[0] is not None:
            return _call("_||_" if rule == "conditionalor" else "_&&_", _build(kids[0]), _build(kids[1]))
        return _build(kids[-1])
    if rule in ("relation", "addition", "multiplication"):
        if len(kids) == 2 and kids[0] is not None:
            op = kids[0]
            return _call(_BINARY[op.data], _build(op.children[0]), _build(kids[1]))
        return _build(kids[-1])
    if rule == "unary":
        if len(kids) == 2:
            return _call("!_" if kids[0].data == "unary_not" else "-_", _build(kids[1]))
        return _build(kids[0])
    if rule in ("member", "primary", "paren_expr"):
        return _build(kids[0])
    if rule == "literal":
        assert isinstance(kids[0], Token)
        return _literal(kids[0])
    if rule == "ident":
        return Expr("ident", str(kids[0]))
    if rule == "member_dot":
        return Expr("select", str(kids[1]), target=_build(kids[0]))
    if rule == "member_index":
        return _call("_[_]", _build(kids[0]), _build(kids[1]))
    if rule in ("member_dot_arg", "ident_arg"):
        target = _build(kids[0]) if rule == "member_dot_arg" else None
        name = str(kids[1] if rule == "member_dot_arg" else kids[0])
        args = [_build(e) for e in kids[-1].children] if kids[-1] is not None and isinstance(kids[-1], Tree) else []
        if target is None and name == "has":
            if len(args) != 1 or args[0].op != "select":
                raise Unsupported("has() takes a field selection")
            return Expr("select", args[0].value, target=args[0].target, test_only=True)
        if target is not None and name in ("all", "exists", "exists_one"):
            return _macro(name, target, args)
        if name in ("map", "filter", "exists_one", "all", "exists"):
            raise Unsupported(f"macro {name}")
        return _call(name, *args, target=target)
    if rule == "list_lit":
        return Expr("list", args=[_build(e) for e in kids[0].children] if kids and kids[0] is not None else [])
    raise Unsupported(f"CEL syntax {rule}")


_PARSER: celparser.CELParser | None = None


def parse(rule: str) -> Expr:
    global _PARSER
    if _PARSER is None:
        _PARSER = celparser.CELParser()
    return _build(_PARSER.parse(rule))


# ---- the cost (cel-go checker/cost.go) -----------------------------------------------------------------------
@dataclass(frozen=True)
class Est:
    """A CostEstimate or SizeEstimate: uint64 arithmetic that saturates, as cel-go's."""

    min: int
    max: int

    def __add__(self, other: Est) -> Est:
        return Est(min(self.min + other.min, U64), min(self.max + other.max, U64))

    def __mul__(self, other: Est) -> Est:
        return Est(min(self.min * other.min, U64), min(self.max * other.max, U64))

    def factor(self, per_unit: float) -> Est:
        return Est(_by_factor(self.min, per_unit), _by_factor(self.max, per_unit))

    def union(self, other: Est) -> Est:
        return Est(min(self.min, other.min), max(self.max, other.max))


def _by_factor(x: int, y: float) -> int:
    fx = float(x)
    if fx > 0 and y > 0 and fx > U64 / y:
        return U64
    return min(math.ceil(fx * y), U64)


ZERO, ONE, UNKNOWN_SIZE = Est(0, 0), Est(1, 1), Est(0, U64)
STRING_TRAVERSAL, REGEX_LENGTH = 0.1, 0.25
LIST_CREATE, MAP_CREATE = 10, 30
_SIZED_COMPARISONS = {"_<_", "_<=_", "_>_", "_>=_"}


class Coster:
    """cel-go's coster for one rule, over the declaration of the rule's node (``self``)."""

    def __init__(self, root: Decl, release: Release) -> None:
        self.root, self.release = root, release
        self.paths: dict[int, list[str]] = {}
        self.types: dict[int, Decl] = {}
        self.sizes: dict[int, Est] = {}
        self.scopes: dict[str, list[Expr]] = {}
        self.accu_types: list[Decl] = []

    # types: what the checker infers, for the subset our rules use
    def type_of(self, e: Expr) -> Decl:
        return self.types[id(e)]

    def cost(self, e: Expr) -> Est:
        handler = getattr(self, "_" + e.op)
        result: Est = handler(e)
        return result

    def _const(self, e: Expr) -> Est:
        self.types[id(e)] = Decl({"int": "int", "uint": "uint", "double": "double", "bool": "bool",
                                  "string": "string", "bytes": "bytes", "null": "null"}[e.kind])
        return ZERO

    def _ident(self, e: Expr) -> Est:
        scope = self.scopes.get(e.value)
        if scope:
            rng = scope[-1]
            rtype = self.type_of(rng)
            if rtype.kind == "list":
                self.paths[id(e)] = [*self.paths.get(id(rng), []), "@items"]
                self.types[id(e)] = rtype.elem or Decl("dyn")
            elif rtype.kind == "map":
                self.paths[id(e)] = [*self.paths.get(id(rng), []), "@keys"]
                self.types[id(e)] = rtype.key or _STRING
            else:
                raise Unsupported(f"comprehension over {rtype.kind}")
        elif e.value == ACCUMULATOR:
            self.paths[id(e)] = [ACCUMULATOR]
            self.types[id(e)] = self.accu_types[-1]
        elif e.value in ("self", "oldSelf"):
            self.paths[id(e)] = [e.value]
            self.types[id(e)] = self.root
        else:
            raise Unsupported(f"identifier {e.value}")
        return ONE

    def _select(self, e: Expr) -> Est:
        assert e.target is not None
        if e.test_only:
            self.types[id(e)] = _BOOL
            if self.release.has_cost < 0:
                return ZERO  # cel-go v0.12: neither has() nor its operand is costed
            return Est(self.release.has_cost, self.release.has_cost) + self.cost(e.target)
        total = self.cost(e.target)
        operand = self.type_of(e.target)
        if operand.kind in ("object", "map"):
            total = total + ONE
        self.paths[id(e)] = [*self.paths.get(id(e.target), []), e.value]
        if operand.kind == "object":
            if e.value not in operand.fields:
                raise Unsupported(f"no field {e.value}")
            self.types[id(e)] = operand.fields[e.value]
        elif operand.kind == "map":
            self.types[id(e)] = operand.elem or Decl("dyn")
        else:
            raise Unsupported(f"select .{e.value} on {operand.kind}")
        return total

    def _list(self, e: Expr) -> Est:
        total = Est(LIST_CREATE, LIST_CREATE)
        for item in e.args:
            total = total + self.cost(item)
        elem = self.type_of(e.args[0]) if e.args else Decl("dyn")
        self.types[id(e)] = Decl("list", len(e.args), 2, elem=elem)
        return total

    def _comprehension(self, e: Expr) -> Est:
        assert e.iter_range and e.accu_init and e.loop_cond and e.loop_step and e.result
        total = self.cost(e.iter_range) + self.cost(e.accu_init)
        self.accu_types.append(self.type_of(e.accu_init))
        self.scopes.setdefault(e.iter_var, []).append(e.iter_range)
        loop, step = self.cost(e.loop_cond), self.cost(e.loop_step)
        self.scopes[e.iter_var].pop()
        total = total + self.cost(e.result)
        self.types[id(e)] = self.type_of(e.result)
        self.accu_types.pop()
        return total + self.size(e.iter_range) * (step + loop)

    # sizes (sizeEstimate, ComputedSize, the API server's EstimateSize)
    def size(self, e: Expr) -> Est:
        if id(e) in self.sizes:
            return self.sizes[id(e)]
        if e.op == "const":
            if e.kind in ("string", "bytes"):
                return Est(len(e.value), len(e.value))
            return ONE
        if e.op == "list":
            return Est(len(e.args), len(e.args))
        path = self.paths.get(id(e), [])
        if path and path[0] != ACCUMULATOR:
            node: Decl | None = self.root  # the API server walks from self whatever the path's head is
            for name in path[1:]:
                if node is None:
                    break
                if name in ("@items", "@values"):
                    node = node.elem
                elif name == "@keys":
                    node = node.key
                else:
                    node = node.fields.get(name)
            if node is not None:
                return Est(0, node.max_elements)
        if self.release.scalar_sizes and self.type_of(e).kind in SCALAR_KINDS:
            return ONE
        return UNKNOWN_SIZE

    def _call(self, e: Expr) -> Est:
        fn = e.value
        arg_costs = [self.cost(a) for a in e.args]
        args_total = ZERO
        for c in arg_costs:
            args_total = args_total + c
        total = ZERO
        if e.target is not None:
            total = self.cost(e.target)
        types = [self.type_of(a) for a in e.args]
        target_type = self.type_of(e.target) if e.target is not None else None
        if fn in ("_&&_", "_||_"):
            self.types[id(e)] = _BOOL
            return total + Est(arg_costs[0].min, (arg_costs[0] + arg_costs[1]).max)
        if fn == "_?_:_":
            self.sizes[id(e)] = self.size(e.args[1]).union(self.size(e.args[2]))
            self.types[id(e)] = types[1]
            return total + arg_costs[0] + arg_costs[1].union(arg_costs[2])
        if fn in ("_==_", "_!=_") or (fn in _SIZED_COMPARISONS and types[0].kind in ("string", "bytes")):
            self.types[id(e)] = _BOOL
            smallest = min(self.size(e.args[0]).max, self.size(e.args[1]).max)
            return total + Est(1 if smallest > 0 else 0, smallest).factor(STRING_TRAVERSAL) + args_total
        if fn == "_+_" and types[0].kind in ("string", "bytes", "list"):
            result = self.size(e.args[0]) + self.size(e.args[1])
            self.sizes[id(e)] = result
            self.types[id(e)] = types[0]
            if types[0].kind == "list":
                return total + ONE + args_total
            return total + result.factor(STRING_TRAVERSAL) + args_total
        if fn == "@in":
            self.types[id(e)] = _BOOL
            if types[1].kind == "list":
                return total + self.size(e.args[1]).factor(1) + args_total
            if types[1].kind != "map":
                raise Unsupported(f"in {types[1].kind}")
            return total + ONE + args_total
        if fn == "matches" and e.target is not None and target_type and target_type.kind == "string":
            self.types[id(e)] = _BOOL
            text = (self.size(e.target) + ONE).factor(STRING_TRAVERSAL)
            pattern = self.size(e.args[0]).factor(REGEX_LENGTH)
            return total + text * pattern + args_total
        if fn in ("startsWith", "endsWith") and target_type and target_type.kind == "string":
            self.types[id(e)] = _BOOL
            return total + self.size(e.args[0]).factor(STRING_TRAVERSAL) + args_total
        if fn == "contains" and e.target is not None and target_type and target_type.kind == "string":
            self.types[id(e)] = _BOOL
            text = self.size(e.target).factor(STRING_TRAVERSAL)
            return total + text * self.size(e.args[0]).factor(STRING_TRAVERSAL) + args_total
        # O(1): cel-go's default
        if fn == "size":
            self.types[id(e)] = _INT
        elif fn in ("!_", "@not_strictly_false") or fn in _SIZED_COMPARISONS:
            self.types[id(e)] = _BOOL
        elif fn in ("_+_", "_-_", "_*_", "_/_", "_%_", "-_") and types[0].kind in ("int", "uint", "double"):
            self.types[id(e)] = types[0]
        elif fn == "_[_]" and types[0].kind in ("list", "map"):
            self.paths[id(e)] = [*self.paths.get(id(e.args[0]), []), "@items" if types[0].kind == "list" else "@values"]
            self.types[id(e)] = types[0].elem or Decl("dyn")
        else:
            raise Unsupported(f"function {fn} on {[t.kind for t in types]}")
        return total + ONE + args_total


def rule_cost(rule: str, node: Decl, release: Release) -> int:
    """The estimated cost (its max) of one rule on a node of this declaration, once."""
    return Coster(node, release).cost(parse(rule)).max


# ---- the CRD: each rule's cardinality, the limits ----------------------------------------------------------------
@dataclass
class RuleCost:
    path: str
    rule: str
    once: int  # one evaluation
    cardinality: int  # how many times it may run (maxItems/maxProperties above it, else what fits a request)
    cost: int  # what the API server compares with RULE_LIMIT and adds to the CRD's total

    def line(self) -> str:
        return f"{self.cost:>14,} = {self.once:,} x {self.cardinality:,}  {self.path}: {self.rule}"


def _walk(schema: dict[str, Any], path: str, cardinality: int | None, root: bool) -> Iterator[
        tuple[str, dict[str, Any], int | None, bool]]:
    yield path, schema, cardinality, root
    if schema.get("type") == "array":
        factor = schema.get("maxItems")
    elif schema.get("type") == "object" and "additionalProperties" in schema:
        factor = schema.get("maxProperties")
    else:
        factor = 1
    child = None if cardinality is None or factor is None else min(cardinality * max(factor, 0), U64)
    for name, sub in (schema.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.properties[{name}]", child, False)
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}.items", child, False)
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}.additionalProperties", child, False)


def schema_costs(schema: dict[str, Any], release: Release) -> list[RuleCost]:
    """Every rule of an openAPIV3Schema with its estimated cost, as ValidateCustomResourceDefinitionOpenAPISchema."""
    costs = []
    for path, node, cardinality, root in _walk(schema, "openAPIV3Schema", 1, True):
        rules = node.get("x-kubernetes-validations") or []
        if not rules:
            continue
        decl = decl_of(node, resource_root=root or bool(node.get("x-kubernetes-embedded-resource")))
        if decl is None:
            raise Unsupported(f"{path}: rules on a node CEL cannot see")
        times = cardinality if cardinality is not None else MAX_REQUEST // (decl.min_size + 1)
        for i, entry in enumerate(rules):
            if "messageExpression" in entry:
                raise Unsupported(f"{path}: messageExpression")
            once = rule_cost(entry["rule"], decl, release)
            costs.append(RuleCost(f"{path}.x-kubernetes-validations[{i}]", entry["rule"], once, times,
                                  0 if once == 0 else min(once * times, U64)))
    return costs


@dataclass
class Verdict:
    release: Release
    version: str
    costs: list[RuleCost]

    @property
    def total(self) -> int:
        return min(sum(c.cost for c in self.costs), U64)

    @property
    def refusals(self) -> list[str]:
        """What the API server would answer (Forbidden), empty when it takes the CRD."""
        out = [f"{c.path}.rule: estimated rule cost exceeds budget by factor of {factor(c.cost, RULE_LIMIT)}"
               for c in self.costs if c.cost > RULE_LIMIT]
        if self.total > CRD_LIMIT:
            out += [f"{c.path}.rule: contributed to estimated rule cost total exceeding cost limit for entire "
                    f"OpenAPIv3 schema" for c in sorted(self.costs, key=lambda c: -c.cost)[:4]
                    if c.cost >= CRD_LIMIT // 100]
            out.append(f"openAPIV3Schema: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 "
                       f"schema exceeds budget by factor of {factor(self.total, CRD_LIMIT)}")
        return out

    def report(self) -> str:
        lines = [f"Kubernetes {self.release.name}, CRD version {self.version}: total {self.total:,} "
                 f"(limit {CRD_LIMIT:,}; each rule's limit {RULE_LIMIT:,})"]
        return "\n".join(lines + ["  " + c.line() for c in self.costs] + ["  REFUSED: " + r for r in self.refusals])


def factor(cost: int, limit: int) -> str:
    """getCostErrorMessage's factor."""
    ratio = cost / limit
    if ratio > 100:
        return "more than 100x"
    return f"{ratio:f}x" if ratio < 1.5 else f"{ratio:.1f}x"


def judge(crd: dict[str, Any]) -> list[Verdict]:
    """The verdict of each modelled release on each version of a CustomResourceDefinition."""
    verdicts = []
    for version in crd["spec"]["versions"]:
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        if schema:
            verdicts += [Verdict(release, version["name"], schema_costs(schema, release)) for release in RELEASES]
    return verdicts
