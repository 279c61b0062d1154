"""Fixed, public, local-only credentials: the events/ files, tests and the local stack share them.

They protect nothing (they are in this repository); a deployed stack generates its own secret.
"""

from pluggy_pipeline_cli.webhook_examples import EXAMPLE_CLIENT_ID

LOCAL_WEBHOOK_SECRET = "local-dev-webhook-secret-not-for-production"
LOCAL_SIGNING_KEY = "local-dev-signing-key-not-for-production"
# The clientId of Pluggy's own webhook examples (seed 003), used as "our" client id locally: the examples
# then pass the receiver's clientId check as they are.
LOCAL_PLUGGY_CLIENT_ID = EXAMPLE_CLIENT_ID
# Pluggy's published webhook source IP; the events/ files deliver from it.
PLUGGY_SOURCE_IP = "177.71.238.212"
# The Pluggy emulator's client secret (the local stand-in for a Pluggy application's credentials).
LOCAL_PLUGGY_CLIENT_SECRET = "local-dev-pluggy-client-secret-not-for-production"
