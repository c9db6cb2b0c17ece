"""composer's Optuna sweeper, `hydra/sweeper=optuna` (configs/hydra/sweeper/optuna.yaml).

A Hydra Sweeper plugin on Optuna 5 with the settings of Hydra's own Optuna sweeper
(hydra-optuna-sweeper, whose last release pins optuna<3), that also resumes a study from its
storage: `composer resume SWEEP_DIR` continues toward the configured n_trials with trial N in job
folder N. It lives in the `hydra_plugins` namespace package (no __init__.py above this one)
because Hydra instantiates sweepers from there only.

Modules: optuna_sweeper (the plugin class Hydra scans and instantiates; no Optuna import until a
sweep starts); the others start with "_", so that Hydra's scan leaves them alone: _search_space
(override strings -> Optuna distributions), _study (the ask / launch / tell loop and the resume),
_storage (a study's name and whether its storage holds it, also read by composer.multirun before a
sweep starts).
"""
