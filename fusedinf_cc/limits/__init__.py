"""An edge box's limits on this machine: a device profile (memory, storage read bandwidth, CPU)
enforced by the kernel on the processes a command measures, through a control group made for
the run and removed after it (`cgroups`). Imports only `common`.
"""
