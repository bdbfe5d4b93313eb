"""The web console: server-rendered pages for field engineers and duty officers, served by the gateway.

    from gateway.web import Console, build_console_router, UserStore, ConsoleQueries
    users = UserStore(registry)
    console = Console(registry, users, DeviceService(registry, provisioner), ConsoleQueries(registry.engine,
                      data_dir / "collector" / "quarantine.db"), alert_store)
    app = create_app(registry, provisioner, extra_routers=[..., build_console_router(console)])
"""

from gateway.web.app import PREFIX, Console, build_console_router
from gateway.web.users import StaffPrincipal, UserStore
from gateway.web.views import ConsoleQueries

__all__ = ["PREFIX", "Console", "ConsoleQueries", "StaffPrincipal", "UserStore", "build_console_router"]
