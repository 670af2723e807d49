# The command table: protocol name -> handler(pump, args) -> reply data. Handlers only pick
# arguments out of the request; the pump validates them and refuses with a reason.
from ..core.errors import Refused


def _arg(args, key):
    if key not in args:
        raise Refused("bad_arg", "missing argument " + key)
    return args[key]


def _none(args):
    if args:
        raise Refused("bad_arg", "this command takes no arguments")


def ping(pump, args):
    _none(args)
    return {"uptime_s": pump.uptime_s}


def status(pump, args):
    _none(args)
    return pump.status()


def basal_get(pump, args):
    _none(args)
    return {"segments": pump.schedule.to_list(), "basal_mUh": pump.basal_rate()}


def basal_set(pump, args):
    return pump.basal_set(_arg(args, "segments"))


def bolus(pump, args):
    return pump.bolus(_arg(args, "mU"))


def bolus_cancel(pump, args):
    _none(args)
    return pump.bolus_cancel()


def suspend(pump, args):
    _none(args)
    return pump.suspend()


def resume(pump, args):
    _none(args)
    return pump.resume()


def reservoir_load(pump, args):
    return pump.reservoir_load(_arg(args, "mU"))


def limits_get(pump, args):
    _none(args)
    return pump.limits.to_dict()


def limits_set(pump, args):
    return pump.limits_set(args)


COMMANDS = {
    "ping": ping,
    "status": status,
    "basal_get": basal_get,
    "basal_set": basal_set,
    "bolus": bolus,
    "bolus_cancel": bolus_cancel,
    "suspend": suspend,
    "resume": resume,
    "reservoir_load": reservoir_load,
    "limits_get": limits_get,
    "limits_set": limits_set,
}

# Commands that change nothing: a retransmission may simply run them again, so their (large)
# replies are not kept in the reply cache.
READ_ONLY = ("ping", "status", "basal_get", "limits_get")
