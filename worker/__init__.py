"""worker: runs lmc_core studies as RQ jobs, one stage per job, on any number of workers (one per GPU).

`queue` is the torch-free side the API imports (submit, status, cancel, recovery); `jobs` holds the job
functions workers run; `runner` the RQ worker class; `cli` the `lmc worker` command; `defaults` every knob.
"""
