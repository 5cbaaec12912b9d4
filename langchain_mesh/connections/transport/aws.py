"""What the AWS connection types (bedrock, sagemaker) share: credentials and the boto3 client.

Credentials come from the connection (``access_key_id`` + ``secret_access_key`` [+ ``session_token``],
or ``profile_name``), else from the standard AWS chain (environment, ``~/.aws``, instance roles).
botocore's own retries are off: the mesh's retry policy retries every provider the same way.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import model_validator

from ...config import ConnectionConfig, Secret, resolve_optional
from ...errors import CapabilityError, ConfigError

__all__ = ["AWSConnectionConfig", "make_boto_client"]


class AWSConnectionConfig(ConnectionConfig):
    region: Optional[str] = None
    #: a VPC endpoint, a proxy, or a langchain_mesh.testing server
    endpoint_url: Optional[str] = None
    access_key_id: Optional[Secret] = None
    secret_access_key: Optional[Secret] = None
    session_token: Optional[Secret] = None
    profile_name: Optional[str] = None

    @model_validator(mode="after")
    def _keys_together(self) -> "AWSConnectionConfig":
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both 'access_key_id' and 'secret_access_key', or neither (the AWS chain)")
        if self.session_token is not None and self.access_key_id is None:
            raise ValueError("'session_token' goes with 'access_key_id' and 'secret_access_key'")
        if self.profile_name and self.access_key_id is not None:
            raise ValueError("give either 'profile_name' or access keys, not both")
        return self


def make_boto_client(service: str, config: AWSConnectionConfig, name: str, extra: str) -> Any:
    """A ``service`` client for connection ``name`` (``extra``: the pip extra to name if boto3 is missing)."""
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, NoRegionError, ProfileNotFound
    except ImportError:
        raise CapabilityError(f"the {config.type} connection needs boto3: pip install 'langchain-mesh[{extra}]'") from None
    at = f"connections.{name}"
    keys = {"aws_access_key_id": resolve_optional(config.access_key_id, f"{at}.access_key_id"),
            "aws_secret_access_key": resolve_optional(config.secret_access_key, f"{at}.secret_access_key"),
            "aws_session_token": resolve_optional(config.session_token, f"{at}.session_token")}
    boto_config = Config(retries={"total_max_attempts": 1, "mode": "standard"}, connect_timeout=config.timeout,
                         read_timeout=config.timeout, user_agent_extra="langchain-mesh")
    try:
        session = boto3.session.Session(profile_name=config.profile_name, region_name=config.region,
                                        **{k: v for k, v in keys.items() if v is not None})
        return session.client(service, endpoint_url=config.endpoint_url, config=boto_config)
    except ProfileNotFound as e:
        raise ConfigError(f"{at}.profile_name: {e}", [(f"{at}.profile_name", str(e))]) from None
    except NoRegionError:
        msg = "no AWS region: set it here or in AWS_REGION / the AWS config file"
        raise ConfigError(f"{at}.region: {msg}", [(f"{at}.region", msg)]) from None
    except BotoCoreError as e:
        raise ConfigError(f"{at}: cannot build the {service} client: {e}", [(at, str(e))]) from None
