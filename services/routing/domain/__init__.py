"""The routing domain, pure Python: the aggregates and their state machines (model), the stop-id
convention (ids), what an order becomes as a shipment and what a replan plans (shipments),
incidents against routes (traffic), events from outside as the rules read them (incoming),
live replanning (replanning) and autonomy levels (autonomy). It imports the solver package,
a pure computational library below it, and the contract's messages that aggregates carry as
content; never the use cases, adapters or api."""
