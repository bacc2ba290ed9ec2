"""Starting and stopping the server: start-up checks and progress, the child environment, quiet logs, stopping."""
