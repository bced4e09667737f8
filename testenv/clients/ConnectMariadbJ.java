// Connect with MariaDB Connector/J 2.7 (Debian libmariadb-java) over TCP from
// the probes' MySQL environment (README.md): MYSQL_HOST (default 127.0.0.1),
// MYSQL_TCP_PORT (default 3306), MYSQL_USER, MYSQL_DATABASE and MYSQL_PWD if
// set. Connector/J 2.7 reaches a Unix socket only through JNA (localSocket),
// which is not installed, so MYSQL_UNIX_PORT is refused. Runs
// "select current_user()" and prints it; exits 1 with the error on stderr.
//
// Run without a build step (source-launch mode):
//   java -cp /usr/share/java/mariadb-java-client.jar ConnectMariadbJ.java
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.Properties;

public class ConnectMariadbJ {
    private static String env(String name, String dflt) {
        String v = System.getenv(name);
        return (v == null || v.isEmpty()) ? dflt : v;
    }

    public static void main(String[] args) {
        try {
            if (env("MYSQL_UNIX_PORT", null) != null) {
                throw new IllegalArgumentException(
                        "MYSQL_UNIX_PORT is set, but this probe connects over TCP only: set MYSQL_HOST and MYSQL_TCP_PORT");
            }
            String user = env("MYSQL_USER", null);
            if (user == null) {
                throw new IllegalArgumentException("MYSQL_USER is not set");
            }
            String host = env("MYSQL_HOST", "127.0.0.1");
            String port = env("MYSQL_TCP_PORT", "3306");
            String db = env("MYSQL_DATABASE", "");
            String url = "jdbc:mariadb://" + host + ":" + port + "/"
                    + URLEncoder.encode(db, StandardCharsets.UTF_8)
                    + "?user=" + URLEncoder.encode(user, StandardCharsets.UTF_8)
                    + "&connectTimeout=30000";
            Properties props = new Properties();
            String password = env("MYSQL_PWD", null);
            if (password != null) {
                props.setProperty("password", password);
            }
            try (Connection c = DriverManager.getConnection(url, props);
                 Statement s = c.createStatement();
                 ResultSet rs = s.executeQuery("select current_user()")) {
                rs.next();
                System.out.println(rs.getString(1));
            }
        } catch (Exception e) {
            System.err.println("MariaDB Connector/J: " + e);
            System.exit(1);
        }
    }
}
