import GRDB
import Shared

/// The coordinator's SQLite schema, as GRDB migrations. WAL journal (a
/// DatabasePool), so that `status` reads while `serve` writes; every state
/// change is one transaction, so a kill -9 loses at most the change in flight.
enum StateSchema {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE sweep (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    name TEXT NOT NULL UNIQUE,
                    file TEXT NOT NULL,
                    priority INTEGER NOT NULL,
                    max_attempts INTEGER NOT NULL,
                    created_at REAL NOT NULL);
                CREATE TABLE job (
                    key TEXT PRIMARY KEY,
                    kind TEXT NOT NULL,
                    category TEXT NOT NULL,
                    parameters TEXT NOT NULL,
                    material TEXT NOT NULL,
                    state TEXT NOT NULL,
                    priority INTEGER NOT NULL,
                    seq INTEGER NOT NULL,
                    waiting INTEGER NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    max_attempts INTEGER NOT NULL,
                    not_before REAL NOT NULL DEFAULT 0,
                    error TEXT,
                    finished_at REAL);
                CREATE INDEX job_queue ON job(state, priority DESC, seq);
                CREATE INDEX job_retry ON job(state, not_before);
                CREATE INDEX job_kind ON job(kind, state);
                CREATE TABLE edge (
                    parent TEXT NOT NULL REFERENCES job(key),
                    child TEXT NOT NULL REFERENCES job(key),
                    role TEXT NOT NULL,
                    PRIMARY KEY (child, role));
                CREATE INDEX edge_parent ON edge(parent);
                CREATE TABLE sweep_job (
                    sweep_id INTEGER NOT NULL REFERENCES sweep(id),
                    job TEXT NOT NULL REFERENCES job(key),
                    PRIMARY KEY (sweep_id, job));
                CREATE INDEX sweep_job_job ON sweep_job(job);
                CREATE TABLE evaluation (
                    sweep_id INTEGER NOT NULL REFERENCES sweep(id),
                    job TEXT NOT NULL REFERENCES job(key),
                    category TEXT NOT NULL,
                    setting TEXT NOT NULL,
                    PRIMARY KEY (sweep_id, job));
                CREATE TABLE attempt (
                    token INTEGER PRIMARY KEY AUTOINCREMENT,
                    job TEXT NOT NULL REFERENCES job(key),
                    worker TEXT NOT NULL,
                    started_at REAL NOT NULL,
                    ended_at REAL,
                    outcome TEXT NOT NULL,
                    error TEXT);
                CREATE INDEX attempt_job ON attempt(job);
                CREATE TABLE lease (
                    job TEXT PRIMARY KEY REFERENCES job(key),
                    token INTEGER NOT NULL REFERENCES attempt(token),
                    worker TEXT NOT NULL,
                    expires_at REAL NOT NULL);
                CREATE INDEX lease_expiry ON lease(expires_at);
                CREATE INDEX lease_worker ON lease(worker);
                CREATE TABLE worker (
                    id TEXT PRIMARY KEY,
                    resources TEXT NOT NULL,
                    first_seen REAL NOT NULL,
                    last_seen REAL NOT NULL);
                CREATE TABLE artifact (
                    hash TEXT PRIMARY KEY,
                    size INTEGER NOT NULL,
                    created_at REAL NOT NULL);
                CREATE TABLE job_output (
                    job TEXT NOT NULL REFERENCES job(key),
                    name TEXT NOT NULL,
                    hash TEXT NOT NULL REFERENCES artifact(hash),
                    PRIMARY KEY (job, name));
                CREATE INDEX job_output_hash ON job_output(hash);
                CREATE TABLE result (
                    sweep_id INTEGER NOT NULL REFERENCES sweep(id),
                    job TEXT NOT NULL REFERENCES job(key),
                    category TEXT NOT NULL,
                    setting TEXT NOT NULL,
                    metric TEXT NOT NULL,
                    value REAL NOT NULL,
                    PRIMARY KEY (sweep_id, job, metric));
                """)
        }
        migrator.registerMigration("v2-small-blobs") { db in
            // Artifacts up to ArtifactStore's inline limit live here instead of
            // in blobs/: one row instead of a file per no-op result (file
            // creation dominated the coordinator's time per job).
            try db.execute(sql: "CREATE TABLE small_blob (hash TEXT PRIMARY KEY, data BLOB NOT NULL)")
        }
        migrator.registerMigration("v3-fewer-indexes") { db in
            // job_queue (state, priority, seq) already serves the retry scan by
            // state, and explain's scan by kind is rare: two indexes fewer to
            // keep up on every job insert and state change.
            try db.execute(sql: "DROP INDEX job_retry; DROP INDEX job_kind")
        }
        migrator.registerMigration("v4-sweep-data-digests") { db in
            // The data's digests a sweep was submitted with (canonical JSON,
            // category -> digest; empty for sweeps from before: unknown).
            try db.execute(sql: "ALTER TABLE sweep ADD COLUMN data_digests TEXT NOT NULL DEFAULT ''")
        }
        migrator.registerMigration("v5-job-memory") { db in
            // The memory a job needs, MiB (StageMemory, from its parameters and
            // its category's size); jobs from before get their kind's former constant.
            try db.execute(sql: "ALTER TABLE job ADD COLUMN memory_mib INTEGER NOT NULL DEFAULT 0")
            for (kind, mib) in [("preprocess", 512), ("pseudo-label", 512), ("bank-fit", 512), ("evaluate", 512),
                                ("segment-train", 2048), ("unet-train", 2048), ("patch-features", 1024)] {
                try db.execute(sql: "UPDATE job SET memory_mib = ? WHERE kind = ?", arguments: [mib, kind])
            }
        }
        migrator.registerMigration("v6-lease-progress") { db in
            // How far the worker says the running stage is (heartbeats).
            try db.execute(sql: "ALTER TABLE lease ADD COLUMN progress_done INTEGER")
            try db.execute(sql: "ALTER TABLE lease ADD COLUMN progress_total INTEGER")
            try db.execute(sql: "ALTER TABLE lease ADD COLUMN progress_unit TEXT")
        }
        migrator.registerMigration("v7-attempt-costs") { db in
            // What a finished attempt cost, as its worker measured it: wall
            // seconds and peak resident memory (MiB; NULL where unknown).
            try db.execute(sql: "ALTER TABLE attempt ADD COLUMN seconds REAL")
            try db.execute(sql: "ALTER TABLE attempt ADD COLUMN peak_mib REAL")
        }
        migrator.registerMigration("v8-verification") { db in
            // Verification (a sweep's `verify` share): job.verify is 0 (not
            // sampled), 1 (sampled, no run held), 2 (one run held, not counted,
            // waiting for another worker's), 3 (two runs compared: the job's
            // state says whether they agreed) or 4 (they disagreed, and
            // `resolve` kept one). check_run keeps each run's
            // outputs and metrics: what is compared, and after, the record.
            try db.execute(sql: """
                ALTER TABLE sweep ADD COLUMN verify REAL NOT NULL DEFAULT 0;
                ALTER TABLE job ADD COLUMN verify INTEGER NOT NULL DEFAULT 0;
                CREATE TABLE check_run (
                    token INTEGER PRIMARY KEY REFERENCES attempt(token),
                    job TEXT NOT NULL REFERENCES job(key),
                    worker TEXT NOT NULL,
                    machine TEXT NOT NULL,
                    outputs TEXT NOT NULL,
                    metrics TEXT NOT NULL);
                CREATE INDEX check_run_job ON check_run(job);
                """)
        }
        migrator.registerMigration("v9-sweep-cancelled") { db in
            // When the sweep was cancelled (NULL: it was not, or it was resumed
            // since): a cancelled sweep no longer holds the jobs it shares.
            try db.execute(sql: "ALTER TABLE sweep ADD COLUMN cancelled_at REAL")
        }
        migrator.registerMigration("v10-lease-progress-base") { db in
            // The first count a lease's heartbeats reported, and when: the
            // stage's pace is measured from there, so a job that resumed
            // from a checkpoint at epoch 60 is not taken to have done 60
            // epochs in this attempt's time.
            try db.execute(sql: "ALTER TABLE lease ADD COLUMN progress_base INTEGER")
            try db.execute(sql: "ALTER TABLE lease ADD COLUMN progress_base_at REAL")
        }
        migrator.registerMigration("v11-job-level") { db in
            // The job's level (StageKind.level: how many stages can follow
            // it): dispatch takes the longest chain's head first among equal
            // priorities, so the queue's index orders by it before age.
            try db.execute(sql: "ALTER TABLE job ADD COLUMN level INTEGER NOT NULL DEFAULT 0")
            for kind in StageKind.allCases where kind.level > 0 {
                try db.execute(sql: "UPDATE job SET level = ? WHERE kind = ?", arguments: [kind.level, kind.rawValue])
            }
            try db.execute(sql: "DROP INDEX job_queue; CREATE INDEX job_queue ON job(state, priority DESC, level DESC, seq)")
        }
        migrator.registerMigration("v12-fewer-btrees-per-result") { db in
            // Every result wrote pages of B-trees that no query needs: the
            // artifact table (never read: the blob store and small_blob hold
            // the artifacts), the index of job outputs by hash (collecting
            // unreferenced blobs scans job_output once), job_output's rowid
            // table beside its primary key (now its primary key alone,
            // WITHOUT ROWID, its hash no longer a foreign key of the artifact
            // table), and two indexes of the lease table, which holds a row
            // per job in flight (scanned for expiry four times a second). A
            // lease is now found by its token, the table's rowid: every
            // report names one, and it was a scan of the table. And an
            // evaluation is found by its job: each metric of a finished job
            // was a scan of every sweep's evaluations.
            try db.execute(sql: """
                CREATE TABLE job_output_new (
                    job TEXT NOT NULL REFERENCES job(key),
                    name TEXT NOT NULL,
                    hash TEXT NOT NULL,
                    PRIMARY KEY (job, name)) WITHOUT ROWID;
                INSERT INTO job_output_new (job, name, hash) SELECT job, name, hash FROM job_output;
                DROP TABLE job_output;
                ALTER TABLE job_output_new RENAME TO job_output;
                DROP TABLE artifact;
                CREATE TABLE lease_new (
                    token INTEGER PRIMARY KEY REFERENCES attempt(token),
                    job TEXT NOT NULL UNIQUE REFERENCES job(key),
                    worker TEXT NOT NULL,
                    expires_at REAL NOT NULL,
                    progress_done INTEGER,
                    progress_total INTEGER,
                    progress_unit TEXT,
                    progress_base INTEGER,
                    progress_base_at REAL);
                INSERT INTO lease_new (token, job, worker, expires_at, progress_done, progress_total, progress_unit, progress_base, progress_base_at)
                    SELECT token, job, worker, expires_at, progress_done, progress_total, progress_unit, progress_base, progress_base_at FROM lease;
                DROP TABLE lease;
                ALTER TABLE lease_new RENAME TO lease;
                CREATE INDEX evaluation_job ON evaluation(job);
                """)
        }
        migrator.registerMigration("v13-ready-jobs-by-fit") { db in
            // The ready jobs by kind and memory (a partial index: a job enters
            // it when it becomes ready and leaves when it is leased). An idle
            // worker asks every 0.2 s; whether any ready job fits it is a seek
            // per kind here, where the dispatch order's scan passed every ready
            // job that did not fit.
            try db.execute(sql: "CREATE INDEX job_ready_fit ON job(kind, memory_mib) WHERE state = \(JobState.ready.sql)")
        }
        migrator.registerMigration("v14-integer-job-references") { db in
            // The tables every job writes (attempt, lease, job_output) name
            // it by an integer id instead of its 64-character key. Jobs get
            // their ids in submit order, the order they are dispatched in, so
            // a batch of results appends to one page of each of these B-trees
            // where the keys (SHA-256, uniform) put each result on a page of
            // its own; and the job's row is found by its id without a search
            // of the key index. The tables written at submit (edge,
            // sweep_job, evaluation, result, check_run) keep the key.
            let attemptSequence = try Int64.fetchOne(db, sql: "SELECT seq FROM sqlite_sequence WHERE name = 'attempt'") ?? 0
            try db.execute(sql: """
                CREATE TABLE job_new (
                    id INTEGER PRIMARY KEY,
                    key TEXT NOT NULL UNIQUE,
                    kind TEXT NOT NULL,
                    category TEXT NOT NULL,
                    parameters TEXT NOT NULL,
                    material TEXT NOT NULL,
                    state TEXT NOT NULL,
                    priority INTEGER NOT NULL,
                    seq INTEGER NOT NULL,
                    waiting INTEGER NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    max_attempts INTEGER NOT NULL,
                    not_before REAL NOT NULL DEFAULT 0,
                    error TEXT,
                    finished_at REAL,
                    memory_mib INTEGER NOT NULL DEFAULT 0,
                    verify INTEGER NOT NULL DEFAULT 0,
                    level INTEGER NOT NULL DEFAULT 0);
                INSERT INTO job_new (id, key, kind, category, parameters, material, state, priority, seq, waiting, attempts, max_attempts,
                                     not_before, error, finished_at, memory_mib, verify, level)
                    SELECT rowid, key, kind, category, parameters, material, state, priority, seq, waiting, attempts, max_attempts,
                           not_before, error, finished_at, memory_mib, verify, level FROM job ORDER BY seq;
                CREATE TABLE attempt_new (
                    token INTEGER PRIMARY KEY AUTOINCREMENT,
                    job INTEGER NOT NULL REFERENCES job(id),
                    worker TEXT NOT NULL,
                    started_at REAL NOT NULL,
                    ended_at REAL,
                    outcome TEXT NOT NULL,
                    error TEXT,
                    seconds REAL,
                    peak_mib REAL);
                INSERT INTO attempt_new (token, job, worker, started_at, ended_at, outcome, error, seconds, peak_mib)
                    SELECT a.token, j.id, a.worker, a.started_at, a.ended_at, a.outcome, a.error, a.seconds, a.peak_mib
                    FROM attempt a JOIN job_new j ON j.key = a.job ORDER BY a.token;
                CREATE TABLE lease_new (
                    token INTEGER PRIMARY KEY REFERENCES attempt(token),
                    job INTEGER NOT NULL UNIQUE REFERENCES job(id),
                    worker TEXT NOT NULL,
                    expires_at REAL NOT NULL,
                    progress_done INTEGER,
                    progress_total INTEGER,
                    progress_unit TEXT,
                    progress_base INTEGER,
                    progress_base_at REAL);
                INSERT INTO lease_new (token, job, worker, expires_at, progress_done, progress_total, progress_unit, progress_base, progress_base_at)
                    SELECT l.token, j.id, l.worker, l.expires_at, l.progress_done, l.progress_total, l.progress_unit, l.progress_base, l.progress_base_at
                    FROM lease l JOIN job_new j ON j.key = l.job;
                CREATE TABLE job_output_new (
                    job INTEGER NOT NULL REFERENCES job(id),
                    name TEXT NOT NULL,
                    hash TEXT NOT NULL,
                    PRIMARY KEY (job, name)) WITHOUT ROWID;
                INSERT INTO job_output_new (job, name, hash) SELECT j.id, o.name, o.hash FROM job_output o JOIN job_new j ON j.key = o.job;
                DROP TABLE lease;
                DROP TABLE job_output;
                DROP TABLE attempt;
                DROP TABLE job;
                ALTER TABLE job_new RENAME TO job;
                ALTER TABLE attempt_new RENAME TO attempt;
                ALTER TABLE lease_new RENAME TO lease;
                ALTER TABLE job_output_new RENAME TO job_output;
                CREATE INDEX job_queue ON job(state, priority DESC, level DESC, seq);
                CREATE INDEX job_ready_fit ON job(kind, memory_mib) WHERE state = \(JobState.ready.sql);
                CREATE INDEX attempt_job ON attempt(job);
                """)
            // Fencing tokens only grow: the sequence goes on from where it was, not from the highest token kept.
            try db.execute(sql: "UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = 'attempt'", arguments: [attemptSequence])
            if db.changesCount == 0, attemptSequence > 0 {
                try db.execute(sql: "INSERT INTO sqlite_sequence (name, seq) VALUES ('attempt', ?)", arguments: [attemptSequence])
            }
        }
        return migrator
    }
}
