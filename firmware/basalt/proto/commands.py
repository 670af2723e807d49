# The command table: protocol name -> the overlay module (basalt/cmd/<module>.py) whose
# function of the same name handles it. `ping` is answered by the server itself.
# One string rather than a dict: a 27-entry dict costs ~5 KB of a 64 KB heap, this ~0.6 KB.
# Each entry is " name:module"; a "*" after the name marks a read-only command (its reply
# is not kept for retransmissions: running it again changes nothing).
_TABLE = (
    " status*:status time_get*:system time_set:system limits_get*:system limits_set:limits"
    " history*:system basal_get*:profile basal_set:basal profile_list*:profile profile_get*:profile"
    " profile_set:basal profile_select:profile_sel profile_delete:profile_sel temp_basal:temp"
    " temp_basal_cancel:temp bolus:bolus bolus_cancel:bolus bolus_calc*:calc calc_set:calc_cfg"
    " calc_get*:calc_cfg suspend:reservoir resume:reservoir rewind:reservoir"
    " reservoir_insert:reservoir prime_start:reservoir prime_stop:reservoir cannula_fill:reservoir "
)


def lookup(cmd):
    """(module, read_only) for a command name, or None."""
    i = _TABLE.find(" " + cmd + ":")
    ro = False
    if i < 0:
        i = _TABLE.find(" " + cmd + "*:")
        ro = True
        if i < 0:
            return None
    start = _TABLE.find(":", i) + 1
    return _TABLE[start:_TABLE.find(" ", start)], ro


def names():
    return [e.split(":")[0].rstrip("*") for e in _TABLE.split()] + ["ping"]

