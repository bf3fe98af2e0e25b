"""The routing domain, pure Python: the aggregates and their state machines (model), the stop-id
convention (ids), building solver problems and reading plans (problem), live replanning
(replanning) and autonomy levels (autonomy)."""
