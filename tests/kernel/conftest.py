"""Kernel-tier fixtures: a fresh lab per test, removed whatever happens."""
import pytest

from edgestick.lab import Lab


@pytest.fixture
def lab():
    lab = Lab.create()
    try:
        yield lab
    finally:
        lab.destroy()


# ---- XDP shield (bpf/, control/xdp.py): compiled once per session -------------------------

@pytest.fixture(scope="session")
def xdp_shield_session():
    """The shield built once (one bcc compile) with a pin folder unique to this run."""
    import secrets
    import shutil
    from edgestick.control.xdp import Shield
    pin_dir = f"/sys/fs/bpf/es-test-{secrets.token_hex(4)}"
    try:
        shield = Shield.build(pin_dir)
        yield shield
        shield.close()
    finally:
        shutil.rmtree(pin_dir, ignore_errors=True)


@pytest.fixture
def xdp_shield(xdp_shield_session):
    """The session's shield with empty maps and the default config."""
    from edgestick.control.xdp import ShieldConfig
    shield = xdp_shield_session
    shield.set_config(ShieldConfig())
    shield.clear("allow", "deny", "bans", "sources", "counters", "new_sources")
    return shield
