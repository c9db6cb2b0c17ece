"""composer's Ray launcher, `hydra/launcher=ray` (configs/hydra/launcher/ray.yaml) and
`hydra/launcher=ray_cluster` (the same, joining a running cluster).

A Hydra Launcher plugin that runs each job of a sweep as a Ray task on the installed Ray, with the
keys of Hydra's own Ray launcher (`ray.init`: ray.init's arguments, `ray.remote`: the task's
options). Hydra's plugin (hydra-ray-launcher, last release 1.2.2) requires cloudpickle<3, which
this project's lock cannot hold. It lives in the `hydra_plugins` namespace package (no
__init__.py above this one) because Hydra instantiates launchers from there only.

Modules: ray_launcher (the plugin class Hydra scans and instantiates; no Ray import until a
sweep launches); the others start with "_", so that Hydra's scan leaves them alone: _session
(start or join Ray for the sweep), _task (one Hydra job inside a Ray task), _core (submit the
jobs, pass Ctrl-C on to them, collect their returns).
"""
