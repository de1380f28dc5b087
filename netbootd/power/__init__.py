"""Power control of nodes: a small driver interface (``driver``), IPMI-over-LAN through
ipmitool (``ipmi``), Wake-on-LAN (``wol``), the ``[power]`` configuration and each node's power
spec (``spec``), the 0600 credentials file (``credentials``), and the calls the CLI, the admin
API and rollouts make (``control``: one node, or a batch with one result per node).
"""
