from agentvm._native import *  # placeholder
