"""The command line: one module per command, each with its parser.

``train`` (``torchreid-fgdi``), ``benchmark``, ``search``, ``export``, ``weights``, ``synthetic`` and
``pretrain`` (``torchreid-fgdi-<command>``). Each has a worker named for its verb that takes the
command's words and returns its result (`train.train`, `benchmark.benchmark`, `search.search`,
`export.export`, `weights.weights`, `synthetic.synthesize`, `pretrain.pretrain`), and
``main(argv=None) -> int``, the console script, which runs the worker through
`refusals.run_command` (a refusal is one ``error:`` line and exit status 2 or 1), so
``python -m torchreid_fgdi.cli.<command>`` works as the console script does. Beside them:
`parsers` (the one ``--help`` layout), `refusals`, `run_pool` (runs side by side) and
`run_folder` (what a run's output folder holds and whether it may be used).
"""
