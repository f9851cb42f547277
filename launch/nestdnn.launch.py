"""Starts the NestDNN perception node and the resource monitor.

    ros2 launch nestdnn_node nestdnn.launch.py \
        [namespace:=robot1] [params_file:=/path/params.yaml] [use_sim_time:=false] [log_level:=info]

Both nodes read their section (`nestdnn_node:` / `resource_monitor:`) of the same params file.
Camera topics are configured per task in the params file; remap them here if the drivers
publish elsewhere (e.g. add remappings=[("/camera/front/image_raw", "/cam0/image")]).
"""
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

try:
    from ament_index_python.packages import get_package_share_directory
    _SHARE = get_package_share_directory("nestdnn_node")
except Exception:  # run from the source tree (tests, development)
    _SHARE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def generate_launch_description():
    namespace = LaunchConfiguration("namespace")
    params_file = LaunchConfiguration("params_file")
    use_sim_time = LaunchConfiguration("use_sim_time")
    log_level = LaunchConfiguration("log_level")
    common = dict(
        namespace=namespace,
        output="screen",
        parameters=[params_file, {"use_sim_time": use_sim_time}],
        ros_arguments=["--log-level", log_level],
    )
    return LaunchDescription([
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of both nodes (and of their relative topics)"),
        DeclareLaunchArgument("params_file",
                              default_value=os.path.join(_SHARE, "params", "nestdnn.yaml"),
                              description="ROS parameters file (nestdnn_node: and resource_monitor: sections)"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock (bag replay) instead of wall time"),
        DeclareLaunchArgument("log_level", default_value="info",
                              description="debug, info, warn, error or fatal"),
        Node(package="nestdnn_node", executable="resource_monitor", name="resource_monitor", **common),
        Node(package="nestdnn_node", executable="nestdnn_node", name="nestdnn_node", **common),
    ])
