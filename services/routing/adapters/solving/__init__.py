"""The solver as an outbound system, in the karrio split: `problem` builds its requests (the
contract's fleet and shipments as a solver Problem), `plans` parses its responses (a Solution
as a plan, a stored plan as a Solution, the diff of two plans), `worker` is what runs in a
worker process, and `planner` is the one class that does the I/O (processes, progress, the
use cases' job calls)."""
