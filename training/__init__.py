"""Training curation policies (RLlib PPO, behaviour cloning): see the RL issue."""

if __name__ != "dataeng_gym.training":
    raise ImportError(
        f"'training' was imported as {__name__!r}; install the project (pip install -e .) and "
        "import it as 'dataeng_gym.training', so that only one copy of it is ever loaded"
    )
