# Small files on a filesystem (POSIX in the simulator, littlefs on boards): the storage HAL
# both ports share. write_atomic writes a new file, verifies it by reading it back, then
# renames it over the old one - so a torn write leaves the old file intact. Data may be one
# bytes object or a sequence of chunks (so large documents need no single large buffer);
# verification compares CRCs in small reads for the same reason. append adds to the end of a
# file and returns once the bytes are stored (littlefs commits on close), so the append-only
# logs of core/history.py never rewrite what they already hold.
#
# Power cuts (simulator): `cut` >= 0 is how many more bytes may reach storage before the power
# fails (the sim HAL sets it from the bus's K line). The write that crosses it is torn there -
# only its first bytes reach the file - and the process stops dead (status 4): no cleanup,
# no clean-shutdown marker, exactly what a brown-out mid-write leaves behind.
import os

from basalt.lib import crc16


class FileStore:
    def __init__(self, root):
        self.root = root + "/"
        self.cut = -1  # no power cut armed
        try:
            os.mkdir(root)
        except OSError:
            pass  # exists

    def read(self, name):
        try:
            with open(self.root + name, "rb") as f:
                return f.read()
        except OSError:
            return None

    def readinto(self, name, start, buf):
        """Fill buf from file `name` at byte start; return the count (0: missing or past its end)."""
        try:
            with open(self.root + name, "rb") as f:
                f.seek(start)
                return f.readinto(buf) or 0
        except OSError:
            return 0

    def listdir(self):
        return os.listdir(self.root[:-1])

    def remove(self, name):
        try:
            os.remove(self.root + name)
        except OSError:
            pass  # already gone

    def append(self, name, data):
        with open(self.root + name, "ab") as f:
            self._put(f, data)

    def _put(self, f, data):
        n = self.cut
        if n >= 0:
            if len(data) > n:
                f.write(data[:n])  # the torn write: only the bytes before the cut
                f.close()
                raise SystemExit(4)  # status 4: cut
            self.cut = n - len(data)
        f.write(data)

    def write_atomic(self, name, data):
        chunks = (data,) if isinstance(data, (bytes, bytearray)) else data
        tmp = self.root + name + ".new"
        crc = 0xFFFF
        size = 0
        with open(tmp, "wb") as f:
            for c in chunks:
                self._put(f, c)
                crc = crc16(c, 0, -1, crc)
                size += len(c)
        buf = bytearray(64)
        check = 0xFFFF
        got = 0
        with open(tmp, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                check = crc16(buf, 0, n, check)
                got += n
        if got != size or check != crc:
            raise OSError("storage verify failed")
        os.rename(tmp, self.root + name)
