"""Master-field dedupe and merge: one record per gradebook entity from IC and the vendor app."""

from gradesync.merge.engine import (
    COUNT_KEYS,
    REJECT_COLUMNS,
    MergeOutcome,
    RejectRateExceeded,
    check_reject_rate,
    dedupe_within_source,
    merge_entity,
)
from gradesync.merge.frames import canonical_dtypes
from gradesync.merge.rules import (
    AttributeMapping,
    DefaultMapping,
    EntityMergeRules,
    MergeRules,
    RenameMapping,
    RulesError,
    ScaleMapping,
    ScoreScaleMapping,
    ValueMapping,
    default_rules,
)

__all__ = [
    "COUNT_KEYS",
    "REJECT_COLUMNS",
    "AttributeMapping",
    "DefaultMapping",
    "EntityMergeRules",
    "MergeOutcome",
    "MergeRules",
    "RejectRateExceeded",
    "RenameMapping",
    "RulesError",
    "ScaleMapping",
    "ScoreScaleMapping",
    "ValueMapping",
    "canonical_dtypes",
    "check_reject_rate",
    "dedupe_within_source",
    "default_rules",
    "merge_entity",
]
