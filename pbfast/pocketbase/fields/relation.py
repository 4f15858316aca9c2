"""The relation field (PocketBase's ``core/field_relation.go``): ids of records of another collection.
That those records exist is checked by the record service (it needs the database)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pbfast.pocketbase.fields.base import Kind, Missing, SettingsContext, Stored, option
from pbfast.pocketbase.fields.errors import ErrorItem, FieldError, min_error, required, templated
from pbfast.pocketbase.fields.multi import MultiValueField

__all__ = ["RelationField"]


@dataclass(eq=True, kw_only=True)
class RelationField(MultiValueField):
    TYPE = "relation"

    cascade_delete: bool = option("cascadeDelete", Kind.BOOL)
    collection_id: str = option("collectionId", Kind.STR)
    help: str = option("help", Kind.STR)
    max_select: int = option("maxSelect", Kind.INT)
    min_select: int = option("minSelect", Kind.INT)
    required: bool = option("required", Kind.BOOL)

    def check_values(self, values: list[str], current: Stored | Missing, uploaded: Sequence[str]) -> None:
        if not values:
            if self.required:
                raise required()
            return
        if self.min_select > 0 and len(values) < self.min_select:
            raise templated("validation_not_enough_values", "Select at least {{.minSelect}}",
                            {"minSelect": self.min_select})
        max_select = max(self.max_select, 1)
        if len(values) > max_select:
            raise templated("validation_too_many_values", "Select no more than {{.maxSelect}}", {"maxSelect": max_select})

    def validate_options(self, context: SettingsContext,
                         put: Callable[[str, ErrorItem | dict[str, ErrorItem] | None], None]) -> None:
        target = self.collection_id
        old = context.old_field
        if not target:
            put("collectionId", required().to_dict())
        elif isinstance(old, RelationField) and old.collection_id != target:
            put("collectionId", FieldError("validation_field_relation_change",
                                           "The relation collection cannot be changed.").to_dict())
        elif context.collection_exists is not None and not context.collection_exists(target):
            put("collectionId", FieldError("validation_field_relation_missing_collection",
                                           "The relation collection doesn't exist.").to_dict())
        elif context.collection_type != "view" and context.is_view_collection is not None and \
                context.is_view_collection(target):
            put("collectionId", FieldError("validation_relation_field_non_view_base_collection",
                                           "Only view collections are allowed to have relations to other views."
                                           ).to_dict())
        put("minSelect", min_error(self.min_select, 0))
        if self.min_select > 0 and not self.max_select:
            put("maxSelect", required().to_dict())
        else:
            put("maxSelect", min_error(self.max_select, self.min_select))
