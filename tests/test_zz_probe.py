import sys
sys.path.insert(0, "/work/main/tests")
from test_deployment import *  # noqa

def test_probe(deployment):
    import time
    time.sleep(1)
    for dag in ("chat_consistency_hourly", "chat_events_drain", "chat_maintenance_daily", "chat_maintenance_monthly",
                "chat_maintenance_weekly", "chat_major_inconsistency", "chat_post_deploy_check",
                "chat_redis_recovery", "chat_sync_health"):
        wait_until(lambda: _parsed(deployment, dag), 300, dag, every=2)
        d = deployment.api("GET", f"/api/v2/dags/{dag}/details")
        print("PARSE", dag, d.get("last_parse_duration"))
