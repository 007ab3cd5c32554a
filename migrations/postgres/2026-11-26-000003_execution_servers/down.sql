DROP TABLE execution_servers;
