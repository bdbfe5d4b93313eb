"""The simulated city: Laem Chabang's sensors, their daily patterns and incidents, published over MQTT."""

from nakhon.sim.city import City, SimDevice, registry_csv
from nakhon.sim.publisher import PublishStats, publish_city
from nakhon.sim.signals import Incident, SimMessage, Simulation

__all__ = ["City", "Incident", "PublishStats", "SimDevice", "SimMessage", "Simulation", "publish_city", "registry_csv"]
