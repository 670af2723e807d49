# Small files on a filesystem (POSIX in the simulator, littlefs on boards): the storage HAL
# both ports share. write_atomic writes a new file, verifies it by reading it back, then
# renames it over the old one - so a torn write leaves the old file intact. Data may be one
# bytes object or a sequence of chunks (so large documents need no single large buffer);
# verification compares CRCs in small reads for the same reason.
import os

from .crc16 import crc16


class FileStore:
    def __init__(self, root):
        self.root = root + "/"
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

    def write_atomic(self, name, data):
        chunks = (data,) if isinstance(data, (bytes, bytearray)) else data
        tmp = self.root + name + ".new"
        crc = 0xFFFF
        size = 0
        with open(tmp, "wb") as f:
            for c in chunks:
                f.write(c)
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
