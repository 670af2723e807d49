# The one exception the core raises for a refused command. The protocol turns it into an
# error reply; the pump's state is untouched whenever it is raised (validate, then act).


class Refused(Exception):
    def __init__(self, code, msg):
        super().__init__(msg)
        self.code = code  # short machine-readable reason: "range", "limit", "state", ...
        self.msg = msg
