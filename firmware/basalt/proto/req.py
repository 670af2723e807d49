# A console request line, checked and routed: the frame, its JSON, the id, a retransmission (the
# kept reply again, never a second bolus), ping, and the command table. proto/server.py runs this
# as an overlay for each line and drops it before the command's own overlay loads, so none of it
# sits in the heap between requests or beside a command (docs/memory.md). The server has parsed
# the line's JSON before this loads: a 48-segment request's list needs a 1 KB block, which it
# finds more easily without this code and the command helpers (basalt.cmd) in the heap - this
# module lives in basalt.proto, not basalt.cmd, so loading it does not load them.
from basalt.core import Refused
from basalt.proto.frame import check

# The command table: protocol name -> the overlay module (basalt/cmd/<module>.py) whose
# function of the same name handles it. `ping` is answered here.
# One string rather than a dict: a 27-entry dict costs ~5 KB of a 64 KB heap, this ~0.6 KB.
# Each module's commands follow "|module:", each with a space before and after; a "*" after the
# name marks a read-only command (its reply is not kept for retransmissions: running it again
# changes nothing).
TABLE = (
    "|status: status* |system: time_get* time_set limits_get* |limits: limits_set |history: history*"
    " |profile: basal_get* profile_list* profile_get* |basal: basal_set profile_set"
    " |profile_sel: profile_select profile_delete |temp: temp_basal temp_basal_cancel"
    " |bolus: bolus |therapy: bolus_cancel |calc: bolus_calc* |calc_cfg: calc_set calc_get*"
    " |state: suspend resume |reservoir: rewind reservoir_insert prime_start prime_stop cannula_fill"
    " |alarm: alarms* alarm_ack alarm_set |cgm_cmd: cgm* cgm_history* cgm_pair cgm_set cgm_scan |"
)


def lookup(name):
    """(module, read_only) for a command name, or None."""
    if "*" in name:
        return None
    i = TABLE.find(" " + name + " ")
    ro = i < 0
    if ro:
        i = TABLE.find(" " + name + "* ")
        if i < 0:
            return None
    start = TABLE.rfind("|", 0, i) + 1
    return TABLE[start:TABLE.find(":", start)], ro


def parse(srv, n, req):
    """Check the server's line rx[0:n] and the request in it (req: its JSON body parsed by the
    server, None if it would not parse). Return (id, crc, module, read_only, cmd, args) for a
    command to run, or None when the line is answered here (a bad frame or request, ping, a
    retransmission) or needs no answer (a bare CRLF)."""
    rx = srv.rx
    if n == 1 and rx[0] == 13:  # a bare CRLF (Enter on a terminal): nothing to answer
        return None
    rid = 0
    crc = 0
    try:
        crc = check(rx, n)[2]
        if req is None:
            raise Refused("json", "body is not valid JSON")
        if type(req) is not dict:
            raise Refused("bad_request", "a request is a JSON object")
        rid = req.get("id")
        if type(rid) is not int or not 1 <= rid <= 65535:
            rid = 0
            raise Refused("bad_request", "id must be an integer 1..65535")
        pump = srv.pump
        for m in srv.cache:
            if m[0] == rid and m[1] == crc and pump.uptime_s - m[2] <= 30:
                # a retransmission within 30 s: the same reply again, never a second bolus (after
                # that an id is free for reuse)
                if m[3]:
                    srv.send(memoryview(srv.cache_buf)[0:m[3]], False)
                    srv.flush()
                else:  # too long to keep, or an older request's (only the newest reply is kept)
                    srv.reply(rid, False, ("duplicate", "already executed; its reply is no longer kept: ask status"))
                return None
        cmd = req.get("cmd")
        args = req.get("args", {})
        if type(args) is not dict:
            raise Refused("bad_request", "args must be an object")
        if cmd == "ping":
            if args:
                raise Refused("bad_arg", "this command takes no arguments")
            srv.reply(rid, True, {"uptime_s": pump.uptime_s, "version": srv.version,
                                   "frames_bad": srv.frames_bad, "events_dropped": srv.dropped})
            return None
        entry = lookup(cmd) if type(cmd) is str and 0 < len(cmd) < 24 and " " not in cmd else None
        if entry is None:
            raise Refused("unknown_cmd", "unknown command %r" % (cmd,))
        return rid, crc, entry[0], entry[1], cmd, args
    except Refused as e:  # a bad frame or request
        srv.frames_bad += 1
        srv.reply(rid, False, (e.code, e.msg), crc if rid else -1)
    return None
