"""Fixed, public, local-only credentials: the events/ files, tests and the local stack share them.

They protect nothing (they are in this repository); a deployed stack generates its own secret.
"""

LOCAL_WEBHOOK_SECRET = "local-dev-webhook-secret-not-for-production"
LOCAL_SIGNING_KEY = "local-dev-signing-key-not-for-production"
# The clientId of Pluggy's own webhook examples (seed 003), used as "our" client id locally.
LOCAL_PLUGGY_CLIENT_ID = "4552bee0-b87f-48b5-896b-c23113839319"
# Pluggy's published webhook source IP; the events/ files deliver from it.
PLUGGY_SOURCE_IP = "177.71.238.212"
# The Pluggy emulator's client secret (the local stand-in for a Pluggy application's credentials).
LOCAL_PLUGGY_CLIENT_SECRET = "local-dev-pluggy-client-secret-not-for-production"
