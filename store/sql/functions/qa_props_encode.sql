-- Properties in the wire's props layout (u16 n, then str key, str value).
CREATE OR REPLACE FUNCTION qa_props_encode(k text[], v text[]) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  n integer := coalesce(array_length(k, 1), 0);
  r bytea := substring(int4send(n) from 3 for 2);
BEGIN
  FOR i IN 1..n LOOP
    r := r || substring(int4send(octet_length(k[i])) from 3 for 2) || convert_to(k[i], 'UTF8')
          || substring(int4send(octet_length(v[i])) from 3 for 2) || convert_to(v[i], 'UTF8');
  END LOOP;
  RETURN r;
END $$;
