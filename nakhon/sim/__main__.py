"""`python -m nakhon.sim --url mqtt://...`: the simulator without the app shell."""

from nakhon.sim.cli import main

if __name__ == "__main__":
    main()
