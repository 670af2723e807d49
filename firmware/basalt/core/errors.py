# The one exception the core raises for a refused command. The protocol turns it into an
# error reply; the pump's state is untouched whenever it is raised (validate, then act).


class Refused(Exception):
    def __init__(self, code, msg):
        super().__init__(msg)
        self.code = code  # short machine-readable reason: "range", "limit", "state", ...
        self.msg = msg


def check_int(value, name, lo, hi):
    """Return value if it is a plain int in [lo, hi]; else refuse. bool is not an int here."""
    if type(value) is not int:
        raise Refused("bad_arg", name + " must be an integer")
    if value < lo or value > hi:
        raise Refused("range", "%s must be %d..%d, got %d" % (name, lo, hi, value))
    return value
