"""The Meta-World tasks of the paper's Table I, importable without MuJoCo or Meta-World (orchestrators and reports
name them; data.env checks any task name against Meta-World itself)."""

PAPER_TASKS: tuple[str, ...] = ("reach-v3", "drawer-open-v3", "faucet-open-v3", "door-open-v3")
