"""Power control of nodes.

``driver`` the interface (on/off/cycle/status -> state, ``PowerResult``) and its errors;
``ipmi`` IPMI-over-LAN through ipmitool; ``wol`` Wake-on-LAN; ``spec`` the ``[power]`` table
and each node's ``power`` spec (pure, called by ``config``); ``credentials`` the 0600 file of
BMC passwords; ``control`` one action or a batch over a config; ``admin_power`` the same as
admin operations (inventory check, timeline event, ``reimage_now``, ``power_cycle`` for
rollouts); ``cli_power`` and ``web/power_routes.py`` the command line and the API;
``check_power`` what ``netbootd check`` reports.
"""
