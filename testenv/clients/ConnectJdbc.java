// Connect with pgJDBC using only the standard libpq environment and no
// password: the JDBC URL is built from PGHOST, PGPORT, PGDATABASE, PGUSER and
// PGSSLMODE; pgJDBC (>= 42.3) reads the password from PGPASSFILE itself.
// Prints current_user; exits 1 with the error on stderr on failure.
//
// Run without a build step (source-launch mode):
//   java -cp /usr/share/java/postgresql.jar ConnectJdbc.java [URL]
// With a URL (e.g. "jdbc:postgresql://?service=orders", which pgJDBC >= 42.5
// resolves through PGSERVICEFILE), the URL is used as given.
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.Statement;
import java.util.Properties;

public class ConnectJdbc {
    private static String env(String name, String dflt) {
        String v = System.getenv(name);
        return (v == null || v.isEmpty()) ? dflt : v;
    }

    private static String enc(String s) {
        return URLEncoder.encode(s, StandardCharsets.UTF_8);
    }

    public static void main(String[] args) {
        String host = env("PGHOST", "localhost");
        String port = env("PGPORT", "5432");
        String user = env("PGUSER", System.getProperty("user.name"));
        String db = env("PGDATABASE", user);
        String sslmode = env("PGSSLMODE", "prefer");
        String url = args.length > 0 ? args[0]
                : "jdbc:postgresql://" + host + ":" + port + "/" + enc(db)
                + "?sslmode=" + enc(sslmode) + "&user=" + enc(user);
        try (Connection c = DriverManager.getConnection(url, new Properties());
             Statement s = c.createStatement();
             ResultSet rs = s.executeQuery("select current_user")) {
            rs.next();
            System.out.println(rs.getString(1));
        } catch (Exception e) {
            System.err.println("pgJDBC: " + e);
            System.exit(1);
        }
    }
}
