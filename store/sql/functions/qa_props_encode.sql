-- Properties in the wire's props layout (u16 n, then str key, str value). What the layout
-- cannot carry (more than 65535 properties, a key or value over 65535 bytes) is refused,
-- never cut to 16 bits.
CREATE OR REPLACE FUNCTION qa_props_encode(k text[], v text[]) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  n integer := coalesce(array_length(k, 1), 0);
  r bytea := substring(int4send(n) from 3 for 2);
  kb bytea;
  vb bytea;
BEGIN
  IF n > 65535 OR coalesce(array_length(v, 1), 0) <> n THEN
    RAISE EXCEPTION 'qa_props_encode: % keys and % values (at most 65535 pairs)', n,
      coalesce(array_length(v, 1), 0) USING ERRCODE = '54000';
  END IF;
  FOR i IN 1..n LOOP
    kb := convert_to(k[i], 'UTF8');
    vb := convert_to(v[i], 'UTF8');
    IF octet_length(kb) > 65535 OR octet_length(vb) > 65535 THEN
      RAISE EXCEPTION 'qa_props_encode: property % is over 65535 bytes', i
        USING ERRCODE = '54000';
    END IF;
    r := r || substring(int4send(octet_length(kb)) from 3 for 2) || kb
          || substring(int4send(octet_length(vb)) from 3 for 2) || vb;
  END LOOP;
  RETURN r;
END $$;
