import copy

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config


@pytest.fixture(scope="module")
def cluster():
    with open("cluster.yaml") as fh:
        return yaml.safe_load(fh)


def test_cluster_yaml_is_valid_against_rays_schema(cluster):
    # what `ray up` does: fill in the provider's defaults, then check against ray-schema.json
    validate_config(prepare_config(copy.deepcopy(cluster)))


def test_schema_check_is_real(cluster):
    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["gpu_worker"]["resourcez"] = {"GPU": 4}
    with pytest.raises(Exception, match="resourcez"):
        validate_config(prepare_config(broken))


def test_node_types_route_jobs(cluster):
    types = cluster["available_node_types"]
    assert types[cluster["head_node_type"]]["resources"]["CPU"] == 0  # nothing scheduled on the head
    assert types["cpu_worker"]["resources"].get("prep", 0) > 0 and "GPU" not in types["cpu_worker"]["resources"]
    assert types["gpu_worker"]["resources"]["GPU"] > 0
    assert cluster["provider"]["type"] == "aws"
    assert any("pip install" in c and "cl3dor-ray" in c for c in cluster["setup_commands"])
    # the dashboard is reached through `ray dashboard` (an SSH tunnel): no security-group rule opens it
    assert "security_group" not in cluster["provider"] and "IpPermissions" not in yaml.safe_dump(cluster)
