"""netbootd: ProxyDHCP, TFTP and HTTP network-boot server for stateless appliance images."""

__version__ = "0.1.0"
