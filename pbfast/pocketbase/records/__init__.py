"""The record service (PocketBase's ``core/record_*`` and its ``RecordUpsert`` form) that the API handlers
call: finding records (:mod:`.find`), API rules evaluated on them (:mod:`.rules`), a body's field
modifiers (:mod:`.modifiers`), saving (:mod:`.save`), deleting (:mod:`.delete`) and the record JSON a
viewer sees (:mod:`.export`). No HTTP here: handlers turn its results and errors into answers."""

from pbfast.pocketbase.records.delete import delete_record
from pbfast.pocketbase.records.errors import LastSuperuserError, RecordValidationError
from pbfast.pocketbase.records.expand import (
    ExpandedRecord,
    ExpandFailed,
    ExpandTooLarge,
    RelatedFetch,
    count_expanded,
    expand_records,
    find_by_ids,
)
from pbfast.pocketbase.records.export import Viewer, expansion_json, record_json, strip_hidden
from pbfast.pocketbase.records.find import Row, find_auth_record_by_email, find_by_identity, find_visible, list_records, load_row
from pbfast.pocketbase.records.modifiers import draft_row, resolve_modifiers
from pbfast.pocketbase.records.rules import (
    Condition,
    RuleError,
    compile_rule,
    draft_matches,
    managed_ids,
    rule_holds,
)
from pbfast.pocketbase.records.save import save_record

__all__ = [
    "Condition",
    "ExpandFailed",
    "ExpandTooLarge",
    "ExpandedRecord",
    "LastSuperuserError",
    "RecordValidationError",
    "RelatedFetch",
    "Row",
    "RuleError",
    "Viewer",
    "compile_rule",
    "count_expanded",
    "delete_record",
    "draft_matches",
    "draft_row",
    "expand_records",
    "expansion_json",
    "find_by_ids",
    "find_auth_record_by_email",
    "find_by_identity",
    "find_visible",
    "list_records",
    "load_row",
    "managed_ids",
    "record_json",
    "resolve_modifiers",
    "rule_holds",
    "save_record",
    "strip_hidden",
]
