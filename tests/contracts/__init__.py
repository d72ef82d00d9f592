"""Contract suites: one set of tests that every adapter of a kind must pass, run against
each adapter on its real peer (restic's `internal/backend/test/suite.go` is the model).

A contract module holds the tests, written against the kind's small interface only, and,
in one place near its top, one factory per adapter: a few lines that build the adapter
on its peer and offer what the tests need to set it up and look behind it. A fixture
parametrized over the factories' table runs every test once per adapter (test ids end
in `[fs]`, `[s3]`, `[file]`, `[kvm]`, `[aws]`, ...).

  test_object_stores.py  ObjectStore (dr_common.repository.store), and the repository
                         format over it: `fs`, `s3`
  test_sources.py        SourceDisk (dr_common.sources.base) for one known disk: `file`,
                         `kvm`, `aws`
  (test_targets.py, for Target and Sink, is to come)

A new adapter joins a suite with one factory and one entry in that module's table; it
passes when it passes the suite unchanged. What only one adapter does (its client's
life, its own errors, its peer's quirks) stays in that adapter's own test module, as
the fs-only and S3-only tests stay in test_repository.py and test_s3store.py.
"""
