"""The environments and everything they simulate: domains, teachers, the data pool, students."""

if __name__ != "dataeng_gym.envs":
    raise ImportError(
        f"'envs' was imported as {__name__!r}; install the project (pip install -e .) and "
        "import it as 'dataeng_gym.envs', so that only one copy of it is ever loaded"
    )

from gymnasium.envs.registration import register

from dataeng_gym.envs.domains import DOMAINS, Domain, Item, make_domain

register(
    id="dataeng_gym/DataEng-v1",
    entry_point="dataeng_gym.envs.simulated:make_data_env",
    max_episode_steps=60,
    nondeterministic=True,
)
register(
    id="dataeng_gym/DataEngText-v1",
    entry_point="dataeng_gym.envs.text:DataEngTextEnv",
    max_episode_steps=60,
    nondeterministic=True,
)
register(
    id="dataeng_gym/DataEngFast-v1",
    entry_point="dataeng_gym.envs.fast:make_fast",
    max_episode_steps=20,
)

__all__ = ["DOMAINS", "Domain", "Item", "make_domain"]
