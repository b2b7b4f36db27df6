"""Read-only access to a psad state directory (state.sqlite and blobs/) and
to 8-bit class-index PNG masks, for the benchmark scripts. Standard library
and numpy only."""
import json, sqlite3, struct, zlib
import numpy as np


def png_array(path):
    """An 8-bit grey or palette PNG (a path, or the file's bytes) as a [height, width] uint8 array."""
    data = path if isinstance(path, bytes) else open(path, "rb").read()
    pos, idat = 8, b""
    while pos < len(data):
        n, = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            w, h, depth, colour = struct.unpack(">IIBB", body[:10])
            if depth != 8 or colour not in (0, 3):
                raise ValueError(f"{path}: only 8-bit grey or palette masks (depth {depth}, colour type {colour})")
        elif kind == b"IDAT":
            idat += body
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, w + 1)
    out = np.zeros((h, w), dtype=np.int32)
    prev = np.zeros(w, dtype=np.int32)
    for y in range(h):
        f, row = raw[y, 0], raw[y, 1:].astype(np.int32)
        if f == 0:
            cur = row
        elif f == 2:
            cur = (row + prev) & 255
        else:  # sub, average, Paeth: each pixel depends on its left neighbour
            cur = np.zeros(w, dtype=np.int32)
            for x in range(w):
                a, b, c = (cur[x - 1] if x else 0), prev[x], (prev[x - 1] if x else 0)
                if f == 1:
                    cur[x] = (row[x] + a) & 255
                elif f == 3:
                    cur[x] = (row[x] + (a + b) // 2) & 255
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    cur[x] = (row[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out[y] = cur
        prev = cur
    return out.astype(np.uint8)


class State:
    """A state directory opened read-only."""

    def __init__(self, path):
        import os
        if not os.path.isfile(f"{path}/state.sqlite"):
            raise SystemExit(f"{path}: no state.sqlite here (expected a state directory, e.g. state/benchmark)")
        self.path = path
        self.db = sqlite3.connect(f"file:{path}/state.sqlite?mode=ro", uri=True)
        # Schema v14 names the job in job_output by its integer id; a state no
        # coordinator of v14 has opened yet still names it by key.
        if any(column[1] == "id" for column in self.db.execute("pragma table_info(job)")):
            self.outputs_sql = "select o.name, o.hash from job_output o join job on job.id = o.job where job.key=? and o.name like ?"
        else:
            self.outputs_sql = "select name, hash from job_output where job=? and name like ?"

    def blob(self, digest):
        row = self.db.execute("select data from small_blob where hash=?", (digest,)).fetchone()
        return bytes(row[0]) if row else open(f"{self.path}/blobs/{digest[:2]}/{digest}", "rb").read()

    def outputs(self, job, like="%"):
        """{name: hash} of a job's outputs whose name matches the SQL pattern."""
        return dict(self.db.execute(self.outputs_sql, (job, like)))

    def json_output(self, job, name):
        return json.loads(self.blob(self.outputs(job, name)[name]))

    def jobs(self, kind, sweep=None):
        """(key, category) of the finished jobs of a kind, of one sweep if named."""
        if sweep is None:
            return self.db.execute("select key, category from job where kind=? and state='done' order by category, key", (kind,)).fetchall()
        if not self.db.execute("select 1 from sweep where name=?", (sweep,)).fetchone():
            names = [n for (n,) in self.db.execute("select name from sweep order by id")]
            raise SystemExit(f"{self.path}: no sweep named {sweep!r} (there are: {', '.join(names)})")
        return self.db.execute(
            "select j.key, j.category from job j join sweep_job sj on sj.job = j.key join sweep s on s.id = sj.sweep_id"
            " where j.kind=? and j.state='done' and s.name=? order by j.category, j.key", (kind, sweep)).fetchall()

    def ancestors(self, job):
        """{kind: parameters} of every job above `job`."""
        found, frontier = {}, [job]
        while frontier:
            for parent, kind, parameters in self.db.execute(
                    "select p.key, p.kind, p.parameters from edge e join job p on p.key = e.parent where e.child = ?",
                    (frontier.pop(),)):
                found[kind] = json.loads(parameters)
                frontier.append(parent)
        return found

    def labelled_views(self, job):
        """Segment-train's views per labelled image above `job` (or of it): 0 is a
        fresh augmentation per step. A key without the field means the stage's
        default when the job ran: 8 fixed views before segment-train code
        version 3, fresh views since."""
        frontier = [job]
        while frontier:
            key = frontier.pop()
            kind, material = self.db.execute("select kind, material from job where key=?", (key,)).fetchone()
            if kind == "segment-train":
                m = json.loads(material)
                return m["parameters"].get("views_per_labelled_image", 8 if m.get("version", 1) < 3 else 0)
            frontier += [k for (k,) in self.db.execute("select parent from edge where child=?", (key,))]
        return None

    def parameters(self, job):
        """A job's parameters."""
        return json.loads(self.db.execute("select parameters from job where key=?", (job,)).fetchone()[0])

    def parent(self, job, role):
        row = self.db.execute("select parent from edge where child=? and role=?", (job, role)).fetchone()
        return row[0] if row else None

    def children(self, job, kind):
        return [k for (k,) in self.db.execute(
            "select e.child from edge e join job c on c.key = e.child where e.parent=? and c.kind=? and c.state='done'", (job, kind))]
