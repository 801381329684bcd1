"""The emulator's tests use the shared local org plugin."""

from tests.support.local_org import local_org, org

__all__ = ["local_org", "org"]
