"""Non-disclosive conformal prediction across members.

Each member trains and calibrates its own inductive conformal predictor on its own
data; for a query, the members return p-values only, and these are combined into
aggregated p-values, prediction sets and intervals. The mean rules run under
Paillier, so that neither the coordinator nor the querier sees one member's
p-values. For a model the members share (a FedAvg result, say), federated split
conformal prediction calibrates it with an encrypted histogram of scores
(``Federation.split_conformal``, a job of kind ``split_conformal``).

The API follows crepes and MAPIE: ``predict_p``, ``predict_set`` (a boolean array,
objects by classes), ``predict_int`` for regression and ``evaluate``; the public
name of the level is ``confidence``, a number in (0, 1).

What a query discloses: the query objects (feature vectors) travel through the
coordinator to the other members. With ``median`` each member's p-values reach the
querier; with the mean rules only their (weighted) mean does, together with how
many members (or, weighted, how many calibration examples) speak for each column.
See docs/conformal.md.

Examples
--------
>>> import numpy as np
>>> from sklearn.datasets import load_iris
>>> from sklearn.tree import DecisionTreeClassifier
>>> X, y = load_iris(return_X_y=True)
>>> labels = np.array(["setosa", "versicolor", "virginica"])[y]
>>> member = ConformalClassifier(DecisionTreeClassifier(random_state=0),
...                              random_state=0).fit(X[::2], labels[::2])
>>> member.predict_set(X[1::50], confidence=0.8).shape
(3, 3)
"""

from __future__ import annotations

from workbench.jobs._conformal_combine import (
    CONSERVATIVE_RULES,
    ENCRYPTED_RULES,
    RULES,
    CountReply,
    MemberReply,
    add_counts,
    combine_p_values,
    count_encoding,
    count_p_values,
    count_reply,
    decrypt_combination,
    decrypt_counts,
    encrypt_counts,
    encrypt_reply,
    intervals_from_sets,
    reply_encoding,
    reply_vector,
    rule_confidence,
)
from workbench.jobs._conformal_core import (
    ConformalClassifier,
    ConformalRegressor,
    ConformalWarning,
    check_confidence,
    conformal_counts,
    conformal_p_values,
    evaluate_intervals,
    evaluate_sets,
    minimum_calibration_size,
    p_value_threshold,
    p_values_from_counts,
)
from workbench.jobs._conformal_federated import (
    FederatedConformalClassifier,
    FederatedConformalRegressor,
    QueryReport,
    intervals_from_grid,
    member_reply,
)
from workbench.jobs._conformal_job import (
    ConformalRunner,
    conformal_spec,
    member_predictor,
    member_random_state,
)
from workbench.jobs._conformal_query import ConformalQuerier
from workbench.jobs._conformal_split import (
    FederatedSplitConformal,
    MeanEnsemble,
    encrypt_histogram,
    histogram_encoding,
    histogram_from_sum,
)
from workbench.jobs._conformal_split_job import (
    SplitConformalPredictor,
    calibrate_shared_model,
)

__all__ = [
    "CONSERVATIVE_RULES",
    "ENCRYPTED_RULES",
    "RULES",
    "SplitConformalPredictor",
    "ConformalClassifier",
    "ConformalQuerier",
    "ConformalRegressor",
    "ConformalRunner",
    "ConformalWarning",
    "CountReply",
    "FederatedConformalClassifier",
    "FederatedConformalRegressor",
    "FederatedSplitConformal",
    "MeanEnsemble",
    "MemberReply",
    "QueryReport",
    "add_counts",
    "calibrate_shared_model",
    "check_confidence",
    "combine_p_values",
    "conformal_counts",
    "conformal_p_values",
    "conformal_spec",
    "count_encoding",
    "count_p_values",
    "count_reply",
    "decrypt_combination",
    "decrypt_counts",
    "encrypt_counts",
    "encrypt_histogram",
    "encrypt_reply",
    "evaluate_intervals",
    "evaluate_sets",
    "histogram_encoding",
    "histogram_from_sum",
    "intervals_from_grid",
    "intervals_from_sets",
    "member_predictor",
    "member_random_state",
    "member_reply",
    "minimum_calibration_size",
    "p_value_threshold",
    "p_values_from_counts",
    "reply_encoding",
    "reply_vector",
    "rule_confidence",
]
